// Writing a checkpoint: the encoded pickle and the storages' bytes into a zip
// archive laid out byte for byte as LibTorch's PyTorchStreamWriter (the
// writer torch.save uses) lays it out.
#pragma once

#include <cstdint>
#include <string>

#include "ckpt/bytes.h"
#include "ckpt/pickle.h"

namespace ckpt {

// Writes `pickle` and every storage it names (each once, byte for byte) to the
// open file `fd`: records `archive/data.pkl`, `archive/byteorder`,
// `archive/data/<i>`, `archive/version`, stored, 64-byte aligned, with zip64
// end records. Storage bytes are copied from the file they lie in
// (`storage_bytes`) inside the kernel when their CRC-32 is known, and
// streamed through a small buffer otherwise: never through the heap. Small
// storages, and bytes that lie in no file, are written from memory. `path` names the
// output in messages. `progress`, when set, hears ("write", bytes done, bytes
// total). Returns the bytes written. Throws `Error` on I/O failure.
uint64_t write_checkpoint(
    const EncodedPickle& pickle, int fd, const std::string& path,
    const ProgressFn& progress = {});

}  // namespace ckpt
