// Proving an output checkpoint: it reopens, decodes to the graph that was
// meant to be written, every tensor equals its source byte for byte, and each
// loads onto the target device through LibTorch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "ckpt/graph.h"

namespace ckpt {

// Throws `Error` with exit status "device unavailable" when `device` (`cpu`,
// `cuda`, `cuda:N`) cannot be used by this build on this machine, and a usage
// error when it does not parse.
void require_device(const std::string& device);

struct VerifyReport {
  size_t tensors = 0;          // tensors compared
  size_t storages = 0;         // storages compared
  uint64_t bytes = 0;          // storage bytes compared
  size_t device_checked = 0;   // tensors round-tripped through `device`
  std::string device;
};

// Checks the archive at `path` against `expected` (the root that was encoded
// into it): LibTorch's PyTorchStreamReader reads it; our reader decodes it to
// a graph that encodes to the same pickle bytes; the tensors match in dtype,
// size, stride, offset and bytes, and storages are shared exactly as in
// `expected`; each tensor copied to `device` and back equals its source.
// Throws `Error` with exit status "verification failed" naming `shown_as`
// (the final name of the file) and the first difference.
// `progress`, when set, hears ("verify", bytes done, bytes total).
VerifyReport verify_output(
    const Node* expected, const std::string& path, const std::string& shown_as,
    const std::string& device,
    const std::function<void(const char*, uint64_t, uint64_t)>& progress = {});

}  // namespace ckpt
