// CRC-32 as zip uses it (polynomial 0xEDB88320, reflected), fast enough to
// run over every tensor byte: PCLMULQDQ folding where the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt {

// Extends `crc` (the CRC-32 of the bytes before, 0 for none) over `size`
// bytes at `data`, like zlib's crc32().
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

// The CRC-32 of two runs of bytes end to end, from the CRC-32 of each and
// the second's size, like zlib's crc32_combine(); `first` when that is 0.
// Joins the sums of a range read in two halves at once (util/two_halves.h).
uint32_t crc32_combine(uint32_t first, uint32_t second, uint64_t second_size);

}  // namespace ckpt
