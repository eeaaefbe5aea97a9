// LibTorch, loaded on demand from the plugin libckpt_torch.so: devices other
// than the CPU, and TorchScript models. Nothing here loads LibTorch for the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/tensor.h"

namespace ckpt {

// True for `cpu`. Throws `Error` (usage) for a device string that is none of
// `cpu`, `cuda`, `cuda:N`.
bool is_cpu_device(const std::string& device);

// Throws `Error` (device unavailable) when `device` cannot be used: no
// plugin, a LibTorch without CUDA, no such GPU.
void require_device(const std::string& device);

// Copies the tensor `loaded` to `device` and back and compares it with
// `expected`. Returns an empty string when equal, else what differs.
std::string round_trip(const std::string& device, const TensorRef& loaded,
                       const TensorRef& expected);

struct ModuleEntry {
  std::string name;
  int dtype = -1;  // a Dtype value, or -1 for one we do not know
  std::vector<int64_t> sizes;
};

// The named parameters and buffers of the TorchScript module at `path`
// (saved with torch.jit.save). Throws `Error` naming the file and cause.
std::vector<ModuleEntry> torchscript_entries(const std::string& path);

}  // namespace ckpt
