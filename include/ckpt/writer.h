// Writing a checkpoint: the encoded pickle and the storages' bytes into a zip
// archive laid out as torch.save lays it out.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "ckpt/pickle.h"

namespace ckpt {

// Writes `pickle` and every storage it names (each once, byte for byte) to the
// open file `fd` through LibTorch's PyTorchStreamWriter: records
// `archive/data.pkl`, `archive/byteorder`, `archive/data/<i>`,
// `archive/version`, stored, 64-byte aligned. `path` names the file in
// messages. `progress`, when set, hears ("write", bytes done, bytes total)
// after each record. Returns the bytes written. Throws `Error` on I/O failure.
uint64_t write_checkpoint(
    const EncodedPickle& pickle, int fd, const std::string& path,
    const std::function<void(const char*, uint64_t, uint64_t)>& progress = {});

}  // namespace ckpt
