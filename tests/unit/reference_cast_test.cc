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

TEST(ReferenceCast, FindsAWrongBfloat16WithOrWithoutAValueAbove2To127InItsBlock) {
  // Blocks of values below 2^127 take a shorter check than blocks holding a
  // larger one (where rounding up may reach inf); both must see a wrong bit.
  std::vector<float> values(10000);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>(i) * 0.37f - 1000.5f;
  }
  for (bool huge : {false, true}) {
    if (huge) {
      values[4200] = 3.3e38f;  // in the same block of 4096 as 5000
    }
    std::vector<uint16_t> out(values.size());
    cast_elements(Dtype::k_float32, Dtype::k_bfloat16, values.data(), out.data(), values.size());
    const auto* in = reinterpret_cast<const uint8_t*>(values.data());
    auto* written = reinterpret_cast<uint8_t*>(out.data());
    EXPECT_EQ(first_cast_difference(Dtype::k_float32, Dtype::k_bfloat16, in, written, out.size()),
              out.size()) << huge;
    for (size_t wrong : {size_t{5000}, size_t{4200}, size_t{9999}}) {
      for (uint16_t flip : {0x0001, 0x8000}) {  // the last bit, the sign
        out[wrong] ^= flip;
        EXPECT_EQ(first_cast_difference(Dtype::k_float32, Dtype::k_bfloat16, in, written,
                                        out.size()),
                  wrong)
            << huge << " " << wrong << " " << flip;
        out[wrong] ^= flip;
      }
    }
  }
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
