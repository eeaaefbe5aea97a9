// The LibTorch plugin: the only code of ckpt-convert that includes LibTorch
// (see plugin_abi.h for why it is a plugin). Every entry point catches
// everything: no exception may cross the C boundary.
#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstring>
#include <optional>

#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "plugin_abi.h"

namespace {

using ckpt::Dtype;
using ckpt::ExitStatus;

int fail(ExitStatus status, const std::string& what, char* message, size_t capacity) {
  std::snprintf(message, capacity, "%s", what.c_str());
  return static_cast<int>(status);
}

std::optional<at::ScalarType> scalar_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::k_float32: return at::kFloat;
    case Dtype::k_float64: return at::kDouble;
    case Dtype::k_float16: return at::kHalf;
    case Dtype::k_bfloat16: return at::kBFloat16;
    case Dtype::k_int64: return at::kLong;
    case Dtype::k_int32: return at::kInt;
    case Dtype::k_int16: return at::kShort;
    case Dtype::k_int8: return at::kChar;
    case Dtype::k_uint8: return at::kByte;
    case Dtype::k_bool: return at::kBool;
    case Dtype::k_complex32: return at::kComplexHalf;
    case Dtype::k_complex64: return at::kComplexFloat;
    case Dtype::k_complex128: return at::kComplexDouble;
    default: return std::nullopt;
  }
}

std::optional<Dtype> dtype_of(at::ScalarType type) {
  for (int d = 0; d <= static_cast<int>(Dtype::k_complex128); ++d) {
    std::optional<at::ScalarType> candidate = scalar_type(static_cast<Dtype>(d));
    if (candidate && *candidate == type) {
      return static_cast<Dtype>(d);
    }
  }
  return std::nullopt;
}

at::Tensor view_of(const CkptTensor& t, at::ScalarType type) {
  return at::from_blob(const_cast<void*>(t.data), at::IntArrayRef(t.sizes, t.ndim),
                       at::IntArrayRef(t.strides, t.ndim), at::TensorOptions().dtype(type));
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int ckpt_torch_abi_version(void) {
  return CKPT_TORCH_ABI_VERSION;
}

__attribute__((visibility("default"))) int ckpt_torch_require_device(const char* device,
                                                                     char* message,
                                                                     size_t capacity) {
  try {
    c10::Device parsed(device);
    if (parsed.is_cpu()) {
      return 0;
    }
    if (!parsed.is_cuda()) {
      return fail(ExitStatus::k_device_unavailable,
                  std::string("device ") + device + " unavailable: only cpu and cuda devices are supported",
                  message, capacity);
    }
    if (!torch::cuda::is_available()) {
      return fail(ExitStatus::k_device_unavailable,
                  std::string("device ") + device +
                      " unavailable: this LibTorch or this machine has no CUDA (build against a "
                      "CUDA LibTorch, see README)",
                  message, capacity);
    }
    auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (parsed.has_index() && parsed.index() >= count) {
      return fail(ExitStatus::k_device_unavailable,
                  std::string("device ") + device + " unavailable: this machine has " +
                      std::to_string(count) + " CUDA device(s)",
                  message, capacity);
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(ExitStatus::k_usage, std::string("invalid device '") + device + "': " + e.what(),
                message, capacity);
  }
}

__attribute__((visibility("default"))) int ckpt_torch_round_trip(const char* device,
                                                                 const CkptTensor* tensor,
                                                                 const CkptTensor* expected,
                                                                 char* message, size_t capacity) {
  try {
    std::optional<at::ScalarType> type = scalar_type(static_cast<Dtype>(tensor->dtype));
    if (!type) {
      return 0;  // no LibTorch dtype: the bytes were compared by the caller
    }
    at::Tensor back = view_of(*tensor, *type).to(c10::Device(device)).to(at::kCPU).contiguous();
    at::Tensor want = view_of(*expected, *type).contiguous();
    if (back.nbytes() != want.nbytes() ||
        std::memcmp(back.data_ptr(), want.data_ptr(), want.nbytes()) != 0) {
      return fail(ExitStatus::k_verify_failed, std::string("differs after loading on ") + device,
                  message, capacity);
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(ExitStatus::k_verify_failed,
                std::string("cannot be loaded on ") + device + ": " + e.what(), message, capacity);
  }
}

__attribute__((visibility("default"))) int ckpt_torch_module_entries(const char* path,
                                                                     CkptEntryFn entry,
                                                                     void* context,
                                                                     char* message,
                                                                     size_t capacity) {
  try {
    torch::jit::Module module = torch::jit::load(path, c10::Device(c10::kCPU));
    auto report = [&](const std::string& name, const at::Tensor& value) {
      std::optional<Dtype> dtype = dtype_of(value.scalar_type());
      std::vector<int64_t> sizes = value.sizes().vec();
      entry(context, name.c_str(), dtype ? static_cast<int32_t>(*dtype) : -1,
            static_cast<int32_t>(sizes.size()), sizes.data());
    };
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      report(item.name, item.value);
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      report(item.name, item.value);
    }
    return 0;
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
      what = c10_error->what_without_backtrace();
    }
    return fail(ExitStatus::k_bad_input, std::string("cannot load TorchScript module: ") + what,
                message, capacity);
  }
}

}  // extern "C"
