// The C interface between libckpt and the LibTorch plugin (libckpt_torch.so).
//
// LibTorch takes 0.6 s and more to load (hundreds of shared libraries), four
// times what copying a 1 GB checkpoint takes, and only devices other than the
// CPU and TorchScript models need it. So it lives in a plugin that
// ckpt-convert opens on demand. Plain C types cross the boundary: an
// official LibTorch may be built with the pre-C++11 std::string ABI.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// Bumped whenever anything below changes.
#define CKPT_TORCH_ABI_VERSION 1

// A CPU tensor over bytes that stay where they are.
struct CkptTensor {
  const void* data;       // the first element
  int32_t dtype;          // a ckpt::Dtype value
  int32_t ndim;
  const int64_t* sizes;
  const int64_t* strides;
};

// Called once per parameter or buffer of a TorchScript module.
typedef void (*CkptEntryFn)(void* context, const char* name, int32_t dtype, int32_t ndim,
                            const int64_t* sizes);

// Every function returns 0 on success, else a ckpt::ExitStatus value with a
// message (NUL-terminated, truncated to `capacity`) in `message`.
typedef int (*CkptAbiVersionFn)(void);
// Whether `device` (`cuda`, `cuda:N`, …) exists for this LibTorch on this machine.
typedef int (*CkptRequireDeviceFn)(const char* device, char* message, size_t capacity);
// Copies `tensor` to `device` and back and compares it bytewise with `expected`
// (status 3 when they differ).
typedef int (*CkptRoundTripFn)(const char* device, const CkptTensor* tensor,
                               const CkptTensor* expected, char* message, size_t capacity);
// Loads the TorchScript module at `path` (torch::jit::load, on the CPU) and
// reports its named parameters and buffers.
typedef int (*CkptModuleEntriesFn)(const char* path, CkptEntryFn entry, void* context,
                                   char* message, size_t capacity);

}  // extern "C"
