// Small shared types every layer uses, kept apart from the object graph so
// that the file, zip and CRC plumbing need not include it: a view of bytes,
// and the progress callback of long stages.
#pragma once

#include <cstdint>
#include <functional>

namespace ckpt {

// A view of bytes that live elsewhere (normally the mapped input file).
struct ByteSpan {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// Reports progress of a long stage (`write`, `verify`): `done` of `total` bytes.
using ProgressFn = std::function<void(const char* stage, uint64_t done, uint64_t total)>;

}  // namespace ckpt
