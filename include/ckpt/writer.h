// Writing a checkpoint: the encoded pickle and the storages' bytes into a zip
// archive laid out byte for byte as LibTorch's PyTorchStreamWriter (the
// writer torch.save uses) lays it out.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "ckpt/bytes.h"
#include "ckpt/pickle.h"

namespace ckpt {

// Storages whose bytes are written cast: each maps to the dtype its bytes
// (`storage_bytes`) are in, its `dtype` being the one written (`--dtype`).
using StorageCasts = std::unordered_map<const Storage*, Dtype>;

// Writes `pickle` and every storage it names (each once, byte for byte) to the
// open file `fd`: records `archive/data.pkl`, `archive/byteorder`,
// `archive/data/<i>`, `archive/version`, stored, 64-byte aligned, with zip64
// end records. Storage bytes are copied from the file they lie in
// (`storage_bytes`) inside the kernel when their CRC-32 is known, and
// streamed through a small buffer otherwise: never through the heap. Small
// storages, and bytes that lie in no file, are written from memory. `path` names the
// output in messages. `progress`, when set, hears ("write", bytes done, bytes
// total). A storage in `casts` is written cast from its bytes' dtype to its
// own (cast.h), streamed through a buffer. Returns the bytes written. Throws
// `Error` on I/O failure.
uint64_t write_checkpoint(
    const EncodedPickle& pickle, int fd, const std::string& path,
    const ProgressFn& progress = {}, const StorageCasts& casts = {});

}  // namespace ckpt
