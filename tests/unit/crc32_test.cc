// ckpt::crc32_update against zlib's table-driven crc32, the independent
// reference: every length across the paths of crc32.cc (zlib below 64 bytes,
// 128-bit folding from 64, 512-bit folding from 256 where the CPU has
// VPCLMULQDQ, and the tail of each), at every alignment, and sums carried on
// from one call to the next.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <vector>

#include "ckpt/crc32.h"

namespace ckpt::test {
namespace {

std::vector<uint8_t> noise(size_t size) {
  std::vector<uint8_t> bytes(size);
  uint64_t state = 0x9e3779b97f4a7c15u;
  for (uint8_t& byte : bytes) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    byte = static_cast<uint8_t>(state >> 56);
  }
  return bytes;
}

uint32_t zlib_crc32(uint32_t crc, const uint8_t* data, size_t size) {
  return static_cast<uint32_t>(::crc32(crc, data, static_cast<uInt>(size)));
}

TEST(Crc32, EveryLengthAndAlignmentMatchesZlib) {
  std::vector<uint8_t> bytes = noise(1200 + 64);
  for (size_t start = 0; start < 64; start += 7) {
    for (size_t size = 0; size <= 1200; ++size) {
      const uint8_t* data = bytes.data() + start;
      ASSERT_EQ(crc32_update(0, data, size), zlib_crc32(0, data, size))
          << "start " << start << ", size " << size;
    }
  }
}

TEST(Crc32, LongBuffersMatchZlib) {
  std::vector<uint8_t> bytes = noise((4u << 20) + 77);
  for (size_t size : {size_t{256}, size_t{4096}, size_t{65535}, size_t{1} << 20, bytes.size()}) {
    EXPECT_EQ(crc32_update(0, bytes.data(), size), zlib_crc32(0, bytes.data(), size)) << size;
  }
}

TEST(Crc32, ASumCarriedOnEqualsTheSumOfTheWhole) {
  std::vector<uint8_t> bytes = noise(100000);
  uint32_t whole = zlib_crc32(0, bytes.data(), bytes.size());
  for (size_t cut : {size_t{1}, size_t{63}, size_t{255}, size_t{257}, size_t{4099}, size_t{99999}}) {
    uint32_t first = crc32_update(0, bytes.data(), cut);
    EXPECT_EQ(crc32_update(first, bytes.data() + cut, bytes.size() - cut), whole) << cut;
  }
}

}  // namespace
}  // namespace ckpt::test
