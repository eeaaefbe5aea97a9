// This file verifies a written checkpoint before it is renamed into place.
//
// Three independent readers must agree with what we meant to write: LibTorch's
// own container reader (the code torch.load runs), our reader decoding it
// again (whose re-encoding must give back the same pickle bytes), and LibTorch
// tensors built over the output bytes and copied through the target device,
// compared with tensors built over the input bytes.
#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include <cstring>
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/tensor.h"
#include "ckpt/verify.h"

namespace ckpt {
namespace {

[[noreturn]] void mismatch(const std::string& path, const std::string& what) {
  throw Error(path + ": verification failed: " + what, ExitStatus::k_verify_failed);
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
    default: return std::nullopt;  // quantized and torch 2.x dtypes: bytes only
  }
}

// A CPU tensor viewing `ref`'s bytes in place.
at::Tensor view_of(const TensorRef& ref, at::ScalarType type) {
  auto* base = const_cast<uint8_t*>(ref.storage->bytes.data);
  void* data = base + ref.offset * element_size(ref.dtype);
  return at::from_blob(data, ref.sizes, ref.strides, at::TensorOptions().dtype(type));
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor ca = a.contiguous();
  at::Tensor cb = b.contiguous();
  return ca.nbytes() == cb.nbytes() && std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

std::string describe(size_t index, const TensorRef& ref) {
  return "tensor #" + std::to_string(index) + " (" + std::string(dtype_name(ref.dtype)) + ")";
}

void check_container(const std::string& path, const std::string& shown_as,
                     const Checkpoint& written) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (!reader.hasRecord("data.pkl")) {
      mismatch(shown_as, "LibTorch's reader finds no data.pkl");
    }
    for (const Storage& storage : written.graph.storages()) {
      if (!reader.hasRecord("data/" + storage.key)) {
        mismatch(shown_as, "LibTorch's reader finds no record data/" + storage.key);
      }
      size_t offset = reader.getRecordOffset("data/" + storage.key);
      if (written.bytes.data + offset != storage.bytes.data) {
        mismatch(shown_as, "LibTorch's reader places data/" + storage.key + " elsewhere");
      }
    }
  } catch (const c10::Error& e) {
    mismatch(shown_as, std::string("LibTorch cannot read the archive: ") + e.what_without_backtrace());
  }
}

}  // namespace

void require_device(const std::string& device) {
  c10::Device parsed(c10::kCPU);
  try {
    parsed = c10::Device(device);
  } catch (const c10::Error&) {
    throw Error("invalid --device '" + device + "': expected cpu, cuda or cuda:N",
                ExitStatus::k_usage);
  }
  if (parsed.is_cpu()) {
    return;
  }
  if (!parsed.is_cuda()) {
    throw Error("device " + device + " unavailable: only cpu and cuda devices are supported",
                ExitStatus::k_device_unavailable);
  }
  if (!torch::cuda::is_available()) {
    throw Error("device " + device + " unavailable: this build of ckpt-convert or this machine "
                "has no CUDA (build against a CUDA LibTorch, see README)",
                ExitStatus::k_device_unavailable);
  }
  auto count = static_cast<int64_t>(torch::cuda::device_count());
  if (parsed.has_index() && parsed.index() >= count) {
    throw Error("device " + device + " unavailable: this machine has " + std::to_string(count) +
                " CUDA device(s)", ExitStatus::k_device_unavailable);
  }
}

VerifyReport verify_output(const Node* expected, const std::string& path,
                           const std::string& shown_as, const std::string& device,
                           const std::function<void(const char*, uint64_t, uint64_t)>& progress) {
  VerifyReport report;
  report.device = device;
  Checkpoint written;
  try {
    written = read_checkpoint(path);
  } catch (const Error& e) {
    mismatch(shown_as, std::string("cannot reread the output: ") + e.what());
  }
  check_container(path, shown_as, written);

  std::string meant = encode_pickle(expected).bytes;
  std::string reread = encode_pickle(written.graph.root).bytes;
  if (meant != reread) {
    mismatch(shown_as, "the written pickle decodes to a different object graph");
  }

  std::vector<TensorRef> sources = tensors_reachable(expected);
  std::vector<TensorRef> outputs = tensors_reachable(written.graph.root);
  if (sources.size() != outputs.size()) {
    mismatch(shown_as, std::to_string(outputs.size()) + " tensors written, " +
                       std::to_string(sources.size()) + " expected");
  }
  std::unordered_map<const Storage*, const Storage*> source_to_output;
  std::unordered_map<const Storage*, const Storage*> output_to_source;
  c10::Device target(device);
  for (size_t i = 0; i < sources.size(); ++i) {
    const TensorRef& src = sources[i];
    const TensorRef& out = outputs[i];
    if (src.dtype != out.dtype || src.sizes != out.sizes || src.strides != out.strides ||
        src.offset != out.offset || src.requires_grad != out.requires_grad ||
        src.parameter != out.parameter) {
      mismatch(shown_as, describe(i, src) + " differs in dtype, size, stride or offset");
    }
    auto [to_out, new_pair] = source_to_output.emplace(src.storage, out.storage);
    auto [to_src, new_back] = output_to_source.emplace(out.storage, src.storage);
    if (to_out->second != out.storage || to_src->second != src.storage) {
      mismatch(shown_as, describe(i, src) + " does not share storage as its source does");
    }
    if (new_pair) {
      const ByteSpan& a = src.storage->bytes;
      const ByteSpan& b = out.storage->bytes;
      if (a.size != b.size || (a.size > 0 && std::memcmp(a.data, b.data, a.size) != 0)) {
        mismatch(shown_as, "storage of " + describe(i, src) + " differs from its source");
      }
      ++report.storages;
      report.bytes += a.size;
      if (progress) {
        progress("verify", report.bytes, written.bytes.size);
      }
    }
    ++report.tensors;
    std::optional<at::ScalarType> type = scalar_type(out.dtype);
    if (!type || out.quantized || out.byte_extent() == 0) {
      continue;
    }
    try {
      at::Tensor loaded = view_of(out, *type).to(target).to(at::kCPU);
      if (!same_bytes(loaded, view_of(src, *type))) {
        mismatch(shown_as, describe(i, src) + " differs after loading on " + device);
      }
    } catch (const c10::Error& e) {
      mismatch(shown_as, describe(i, src) + " cannot be loaded on " + device + ": " +
                         e.what_without_backtrace());
    }
    ++report.device_checked;
  }
  return report;
}

}  // namespace ckpt
