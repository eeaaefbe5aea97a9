// Writing a checkpoint: the encoded pickle and the storages' bytes into a zip
// archive laid out byte for byte as LibTorch's PyTorchStreamWriter (the
// writer torch.save uses) lays it out.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "ckpt/bytes.h"
#include "ckpt/pickle.h"
#include "ckpt/reread_behind.h"
#include "ckpt/storage_pieces.h"

namespace ckpt {

// Storages whose bytes are written cast: each maps to the dtype its bytes
// (`storage_bytes`) are in, its `dtype` being the one written (`--dtype`).
using StorageCasts = std::unordered_map<const Storage*, Dtype>;

// A verified write of casts (--dtype): each buffer is compared, as soon as
// it is cast, with verification's own reference cast (`differs`: the index
// of the first element of `written` that is not `source` cast, or `count`),
// and the CRC-32 of the source bytes each storage was cast from is noted.
// Verification then rereads only the output (verify_output), instead of
// reading the whole source again beside it. A difference throws
// `verification_failed`.
struct CastCheck {
  size_t (*differs)(Dtype from, Dtype to, const uint8_t* source, const uint8_t* written,
                    size_t count) = nullptr;
  std::unordered_map<const Storage*, uint32_t> source_crc32s;  // noted by the writer
  // A safetensors file has no CRC-32s: there the writer also notes the
  // CRC-32 of the cast bytes it wrote of each storage.
  std::unordered_map<const Storage*, uint32_t> written_crc32s;
};

// Writes `pickle` and every storage it names (each once, byte for byte) to the
// open file `fd`: records `archive/data.pkl`, `archive/byteorder`,
// `archive/data/<i>`, `archive/version`, stored, 64-byte aligned, with zip64
// end records. Storage bytes are copied from the file they lie in
// (`storage_bytes`) inside the kernel when their CRC-32 is known, and
// streamed through a small buffer otherwise: never through the heap. Small
// storages, and bytes that lie in no file, are written from memory. `path` names the
// output in messages. `progress`, when set, hears ("write", bytes done, bytes
// total). A storage in `casts` is written cast from its bytes' dtype to its
// own (cast.h), streamed through a buffer. With `reads`, storages without a
// CRC-32 of their own (pieces of a ZeRO run's records) note there the CRC-32
// of every run of input they were read from (storage_pieces.h), so that
// verification can prove them by rereading the output alone; so do the
// sources of casts. With `check`, casts are checked as they are written
// (CastCheck). With `reread`, each large storage record is announced to it
// once written. Returns the bytes written. Throws `Error` on I/O failure.
uint64_t write_checkpoint(
    const EncodedPickle& pickle, int fd, const std::string& path,
    const ProgressFn& progress = {}, const StorageCasts& casts = {}, ReadLog* reads = nullptr,
    CastCheck* check = nullptr, RereadBehind* reread = nullptr);

}  // namespace ckpt
