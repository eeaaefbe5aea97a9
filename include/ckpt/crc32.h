// CRC-32 as zip uses it (polynomial 0xEDB88320, reflected), fast enough to
// run over every tensor byte: PCLMULQDQ folding where the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt {

// Extends `crc` (the CRC-32 of the bytes before, 0 for none) over `size`
// bytes at `data`, like zlib's crc32().
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

}  // namespace ckpt
