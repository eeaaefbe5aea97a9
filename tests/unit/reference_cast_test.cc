// The verifiers' reference cast (src/verify/reference_cast.cc) against the
// writer's (cast.h): two implementations that must agree on every value they
// are shown, and a reference that notices one wrong element.
#include "verify/reference_cast.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ckpt/cast.h"

namespace ckpt {
namespace {

// Every `step`-th float32 bit pattern, both signs, NaNs and infinities included.
std::vector<uint32_t> float_patterns(uint32_t step) {
  std::vector<uint32_t> bits;
  for (uint64_t b = 0; b <= 0xFFFFFFFFu; b += step) {
    bits.push_back(static_cast<uint32_t>(b));
  }
  for (uint32_t special : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7F7FFFFFu,
                           0x477FE000u, 0x477FEFFFu, 0x477FF000u, 0x33800000u, 0x33000000u,
                           0x3F808000u, 0x3F818000u, 0x00000001u, 0x807FFFFFu, 0x7FC00001u}) {
    bits.push_back(special);
  }
  return bits;
}

template <typename Out>
void expect_agree(Dtype from, Dtype to, const void* in, size_t count) {
  std::vector<Out> out(count);
  cast_elements(from, to, in, out.data(), count);
  EXPECT_EQ(first_cast_difference(from, to, static_cast<const uint8_t*>(in),
                                  reinterpret_cast<const uint8_t*>(out.data()), count),
            count)
      << dtype_name(from) << " -> " << dtype_name(to);
  // One wrong element is found where it is.
  size_t wrong = count / 2;
  out[wrong] ^= 1;
  EXPECT_EQ(first_cast_difference(from, to, static_cast<const uint8_t*>(in),
                                  reinterpret_cast<const uint8_t*>(out.data()), count),
            wrong);
}

TEST(ReferenceCast, AgreesWithTheWriterFromFloat32) {
  std::vector<uint32_t> bits = float_patterns(251);
  expect_agree<uint16_t>(Dtype::k_float32, Dtype::k_bfloat16, bits.data(), bits.size());
  expect_agree<uint16_t>(Dtype::k_float32, Dtype::k_float16, bits.data(), bits.size());
}

TEST(ReferenceCast, AgreesWithTheWriterOnEvery16BitValue) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) {
    all[i] = static_cast<uint16_t>(i);
  }
  expect_agree<uint16_t>(Dtype::k_float16, Dtype::k_bfloat16, all.data(), all.size());
  expect_agree<uint16_t>(Dtype::k_bfloat16, Dtype::k_float16, all.data(), all.size());
  expect_agree<uint32_t>(Dtype::k_float16, Dtype::k_float32, all.data(), all.size());
  expect_agree<uint32_t>(Dtype::k_bfloat16, Dtype::k_float32, all.data(), all.size());
}

TEST(ReferenceCast, AgreesWithTheWriterFromFloat64) {
  std::vector<double> values;
  for (uint32_t b : float_patterns(65537)) {
    float f;
    std::memcpy(&f, &b, 4);
    values.push_back(f);
    values.push_back(static_cast<double>(f) * (1 + 0x1p-30));  // rounds twice
  }
  values.push_back(1e300);
  values.push_back(-1e-300);
  expect_agree<uint16_t>(Dtype::k_float64, Dtype::k_bfloat16, values.data(), values.size());
  expect_agree<uint16_t>(Dtype::k_float64, Dtype::k_float16, values.data(), values.size());
  expect_agree<uint32_t>(Dtype::k_float64, Dtype::k_float32, values.data(), values.size());
}

}  // namespace
}  // namespace ckpt
