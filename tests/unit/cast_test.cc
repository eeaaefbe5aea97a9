// The floating casts (src/transform/cast.cc) against torch's known results at
// the edges, and against references written differently over every float32
// bit pattern: bfloat16 by comparing the dropped half with the tie, float16
// by an integer significand shift (the library uses an FPU add for
// subnormals), and the F16C path against the portable one.
// tests/e2e/cast_judge.py checks the same casts against torch itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "ckpt/cast.h"

namespace ckpt::test {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

uint64_t bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

uint16_t to16(Dtype to, uint32_t f32_bits, CastPath path = CastPath::k_best) {
  uint16_t out = 0xABCD;
  cast_elements(Dtype::k_float32, to, &f32_bits, &out, 1, path);
  return out;
}

uint16_t to16(Dtype to, double d) {
  uint16_t out = 0xABCD;
  cast_elements(Dtype::k_float64, to, &d, &out, 1);
  return out;
}

// bfloat16 reference: keep the top half, add one unit when the dropped half
// is above the tie or at the tie with an odd kept half.
uint16_t ref_bf16(uint32_t x) {
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
    return 0xFFFF;
  }
  const uint32_t kept = x >> 16;
  const uint32_t dropped = x & 0xFFFFu;
  const bool up = dropped > 0x8000u || (dropped == 0x8000u && (kept & 1u) != 0);
  return static_cast<uint16_t>(kept + (up ? 1u : 0u));
}

// float16 reference: the exact significand shifted by the exponent's distance
// from float16's, rounded with explicit remainder comparisons.
uint16_t ref_f16(uint32_t x) {
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {
    return sign | 0x7E00u;
  }
  if (a == 0x7F800000u) {
    return sign | 0x7C00u;
  }
  const int e = static_cast<int>(a >> 23);
  const uint64_t m = e == 0 ? (a & 0x7FFFFFu) : ((a & 0x7FFFFFu) | 0x800000u);
  // value = m * 2^(max(e,1) - 150); float16 subnormal step is 2^-24, and the
  // step at exponent e16 >= 1 is 2^(e16 - 25).
  const int e_eff = e == 0 ? 1 : e;
  const int e16 = e_eff - 112;  // float16 biased exponent if normal
  const int step_exp = e16 >= 1 ? e16 - 25 : -24;
  const int shift = step_exp - (e_eff - 150);  // right shift of m to units of the step
  uint64_t q;
  if (shift >= 64) {
    q = 0;
  } else {
    q = m >> shift;
    const uint64_t rem = m - (q << shift);
    const uint64_t half = uint64_t{1} << (shift - 1);
    if (rem > half || (rem == half && (q & 1u) != 0)) {
      ++q;
    }
  }
  // q counts steps: as a float16 with the implicit bit in q's bit 10.
  uint32_t h;
  if (e16 >= 1) {
    h = (static_cast<uint32_t>(e16 - 1) << 10) + static_cast<uint32_t>(q);  // carries into the exponent
  } else {
    h = static_cast<uint32_t>(q);
  }
  if (h >= 0x7C00u) {
    h = 0x7C00u;
  }
  return static_cast<uint16_t>(sign | h);
}

TEST(Cast, CastableOnlyBetweenTheFourFloatDtypes) {
  EXPECT_TRUE(castable(Dtype::k_float32, Dtype::k_bfloat16));
  EXPECT_TRUE(castable(Dtype::k_float64, Dtype::k_float16));
  EXPECT_TRUE(castable(Dtype::k_float16, Dtype::k_float16));
  EXPECT_FALSE(castable(Dtype::k_float32, Dtype::k_int64));
  EXPECT_FALSE(castable(Dtype::k_float8_e4m3fn, Dtype::k_float32));
  EXPECT_EQ(cast_output_bytes(Dtype::k_bfloat16, 10), 20u);
  EXPECT_EQ(cast_output_bytes(Dtype::k_float64, 3), 24u);
}

TEST(Cast, RefusesANonFloatPairNamingBoth) {
  int32_t in = 1;
  float out = 0;
  try {
    cast_elements(Dtype::k_int32, Dtype::k_float32, &in, &out, 1);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "cast from int32 to float32: not a cast between float32, float64, float16 and bfloat16");
  }
}

TEST(Cast, Float32ToBfloat16Edges) {
  const Dtype bf = Dtype::k_bfloat16;
  EXPECT_EQ(to16(bf, 0x00000000u), 0x0000);  // +0
  EXPECT_EQ(to16(bf, 0x80000000u), 0x8000);  // -0
  EXPECT_EQ(to16(bf, 0x7F800000u), 0x7F80);  // +inf
  EXPECT_EQ(to16(bf, 0xFF800000u), 0xFF80);  // -inf
  EXPECT_EQ(to16(bf, 0x3F808000u), 0x3F80);  // tie, even stays
  EXPECT_EQ(to16(bf, 0x3F818000u), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(to16(bf, 0x3F807FFFu), 0x3F80);  // just below the tie
  EXPECT_EQ(to16(bf, 0x3F808001u), 0x3F81);  // just above the tie
  EXPECT_EQ(to16(bf, 0xBF808001u), 0xBF81);  // the same, negative
  EXPECT_EQ(to16(bf, 0xBF808000u), 0xBF80);
  EXPECT_EQ(to16(bf, 0x7F7F7FFFu), 0x7F7F);  // largest that stays finite
  EXPECT_EQ(to16(bf, 0x7F7F8000u), 0x7F80);  // tie at the top: odd, up to inf
  EXPECT_EQ(to16(bf, 0x7F7FFFFFu), 0x7F80);  // FLT_MAX overflows
  EXPECT_EQ(to16(bf, 0xFF7FFFFFu), 0xFF80);
  EXPECT_EQ(to16(bf, 0x00000001u), 0x0000);  // smallest subnormal
  EXPECT_EQ(to16(bf, 0x00008000u), 0x0000);  // subnormal tie to even
  EXPECT_EQ(to16(bf, 0x00018000u), 0x0002);
  EXPECT_EQ(to16(bf, 0x007FFFFFu), 0x0080);  // largest subnormal rounds to the smallest normal
}

TEST(Cast, Float32ToBfloat16NaNIsAllOnesWhateverItsSignOrPayload) {
  for (uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu,
                       0xFFFFFFFFu, 0x7FD8C09Au}) {
    EXPECT_EQ(to16(Dtype::k_bfloat16, nan), 0xFFFF) << std::hex << nan;
  }
}

TEST(Cast, Float32ToFloat16Edges) {
  for (CastPath path : {CastPath::k_best, CastPath::k_portable}) {
    auto h = [&](float f) { return to16(Dtype::k_float16, bits(f), path); };
    EXPECT_EQ(h(0.0f), 0x0000);
    EXPECT_EQ(h(-0.0f), 0x8000);
    EXPECT_EQ(h(INFINITY), 0x7C00);
    EXPECT_EQ(h(-INFINITY), 0xFC00);
    EXPECT_EQ(h(65504.0f), 0x7BFF);   // max finite
    EXPECT_EQ(h(65519.0f), 0x7BFF);   // below the overflow tie
    EXPECT_EQ(h(65520.0f), 0x7C00);   // the tie overflows (0x7BFF is odd)
    EXPECT_EQ(h(-65520.0f), 0xFC00);
    EXPECT_EQ(h(1e10f), 0x7C00);
    EXPECT_EQ(h(0x1p-14f), 0x0400);   // smallest normal
    EXPECT_EQ(h(0x1p-24f), 0x0001);   // smallest subnormal
    EXPECT_EQ(h(0x1.ff8p-15f), 0x03FF);  // largest subnormal
    EXPECT_EQ(h(0x1.ffcp-15f), 0x0400);  // tie between it and the smallest normal: even, up
    EXPECT_EQ(h(0x1p-25f), 0x0000);   // tie to the even zero
    EXPECT_EQ(h(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
    EXPECT_EQ(h(-0x1p-25f), 0x8000);
    EXPECT_EQ(h(0x1.8p-24f), 0x0002);  // 1.5 steps: tie, odd rounds up
    EXPECT_EQ(h(0x1p-149f), 0x0000);  // float32 subnormal
    EXPECT_EQ(h(1.0f + 0x1p-11f), 0x3C00);  // tie, even stays
    EXPECT_EQ(h(1.0f + 0x3p-11f), 0x3C02);  // tie, odd rounds up
    EXPECT_EQ(h(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3C01);
    EXPECT_EQ(h(std::nextafter(1.0f + 0x1p-11f, 0.0f)), 0x3C00);
    EXPECT_EQ(h(-(1.0f + 0x3p-11f)), 0xBC02);
    EXPECT_EQ(h(0.1f), 0x2E66);
  }
}

TEST(Cast, Float32ToFloat16NaNKeepsOnlyTheSign) {
  for (CastPath path : {CastPath::k_best, CastPath::k_portable}) {
    EXPECT_EQ(to16(Dtype::k_float16, 0x7FC00000u, path), 0x7E00);
    EXPECT_EQ(to16(Dtype::k_float16, 0xFFC00000u, path), 0xFE00);
    EXPECT_EQ(to16(Dtype::k_float16, 0x7F800001u, path), 0x7E00);
    EXPECT_EQ(to16(Dtype::k_float16, 0x7FD8C09Au, path), 0x7E00);
    EXPECT_EQ(to16(Dtype::k_float16, 0xFFFFFFFFu, path), 0xFE00);
  }
}

TEST(Cast, Float64RoundsTwiceThroughFloat32) {
  // Just above a float16 tie in float64, but that excess is lost rounding to
  // float32 first; the float32 tie then rounds to even, as torch does.
  const double above_tie = 1.0 + 0x1p-11 + 0x1p-40;
  EXPECT_EQ(to16(Dtype::k_float16, above_tie), 0x3C00);
  EXPECT_EQ(to16(Dtype::k_bfloat16, 1.0 + 0x1p-8 + 0x1p-40), 0x3F80);
  EXPECT_EQ(to16(Dtype::k_float16, 1e300), 0x7C00);
  EXPECT_EQ(to16(Dtype::k_bfloat16, -1e300), 0xFF80);
  EXPECT_EQ(to16(Dtype::k_bfloat16, std::nan("")), 0xFFFF);
  EXPECT_EQ(to16(Dtype::k_float16, -std::nan("")), 0xFE00);
  float f = 0;
  const double d = 0x1p-149 * 0.75;  // rounds to the smallest float32 subnormal
  cast_elements(Dtype::k_float64, Dtype::k_float32, &d, &f, 1);
  EXPECT_EQ(bits(f), 0x00000001u);
  const double big = 3.5e38;
  cast_elements(Dtype::k_float64, Dtype::k_float32, &big, &f, 1);
  EXPECT_EQ(bits(f), 0x7F800000u);
}

TEST(Cast, WideningIsExactForEveryFloat16AndBfloat16) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    all[i] = static_cast<uint16_t>(i);
  }
  std::vector<uint32_t> f32(65536);
  std::vector<double> f64(65536);
  std::vector<uint16_t> back(65536);
  for (Dtype narrow : {Dtype::k_float16, Dtype::k_bfloat16}) {
    cast_elements(narrow, Dtype::k_float32, all.data(), f32.data(), all.size());
    cast_elements(narrow, Dtype::k_float64, all.data(), f64.data(), all.size());
    cast_elements(Dtype::k_float32, narrow, f32.data(), back.data(), all.size());
    for (uint32_t i = 0; i < 65536; ++i) {
      float f;
      std::memcpy(&f, &f32[i], sizeof f);
      if (std::isnan(f)) {
        EXPECT_TRUE(std::isnan(f64[i])) << i;
        continue;
      }
      ASSERT_EQ(back[i], i) << dtype_name(narrow) << " round trip of " << std::hex << i;
      ASSERT_EQ(bits(f64[i]), bits(static_cast<double>(f))) << i;
    }
  }
  // NaN: float16 keeps sign and payload and gains the quiet bit; bfloat16 keeps its bits.
  cast_elements(Dtype::k_float16, Dtype::k_float32, all.data(), f32.data(), all.size());
  EXPECT_EQ(f32[0x7C01], 0x7FC02000u);
  EXPECT_EQ(f32[0xFFFF], 0xFFFFE000u);
  EXPECT_EQ(f32[0x0001], bits(0x1p-24f));
  EXPECT_EQ(f32[0x83FF], bits(-0x1.ff8p-15f));
  cast_elements(Dtype::k_bfloat16, Dtype::k_float32, all.data(), f32.data(), all.size());
  EXPECT_EQ(f32[0x7F81], 0x7F810000u);
}

TEST(Cast, Float16AndBfloat16ConvertThroughFloat32) {
  const uint16_t h[] = {0x3C01, 0x7E00, 0xFE01, 0x0001};
  uint16_t b[4];
  cast_elements(Dtype::k_float16, Dtype::k_bfloat16, h, b, 4);
  EXPECT_EQ(b[0], 0x3F80);  // 1 + 2^-10 rounds to 1 in bfloat16
  EXPECT_EQ(b[1], 0x7FC0);  // torch's scalar NaN here
  EXPECT_EQ(b[2], 0x7FC0);
  EXPECT_EQ(b[3], 0x3380);  // 2^-24
  const uint16_t bf[] = {0x3F81, 0x7FFF, 0xFFFF, 0x4780};
  cast_elements(Dtype::k_bfloat16, Dtype::k_float16, bf, b, 4);
  EXPECT_EQ(b[0], 0x3C08);
  EXPECT_EQ(b[1], 0x7E00);
  EXPECT_EQ(b[2], 0xFE00);
  EXPECT_EQ(b[3], 0x7C00);  // 65536 overflows
}

TEST(Cast, UnalignedBuffersAndEveryTailLength) {
  std::vector<unsigned char> in(4 * 40 + 1), out(2 * 40 + 1), expect(2 * 40);
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<unsigned char>(i * 37 + 11);
  }
  for (size_t n = 0; n <= 40; ++n) {
    cast_elements(Dtype::k_float32, Dtype::k_float16, in.data() + 1, out.data() + 1, n);
    for (size_t i = 0; i < n; ++i) {
      uint32_t x;
      std::memcpy(&x, in.data() + 1 + 4 * i, 4);
      uint16_t y;
      std::memcpy(&y, out.data() + 1 + 2 * i, 2);
      ASSERT_EQ(y, ref_f16(x)) << n << " " << i;
    }
  }
}

// Casts float32 patterns [begin, end) step `stride` in chunks through `path`
// and compares each with `ref`; returns the number of mismatches.
template <typename Ref>
uint64_t sweep(Dtype to, CastPath path, uint64_t stride, Ref ref) {
  constexpr size_t k_chunk = 1 << 16;
  std::vector<uint32_t> in(k_chunk);
  std::vector<uint16_t> out(k_chunk);
  uint64_t mismatches = 0;
  for (uint64_t base = 0; base < (uint64_t{1} << 32); base += k_chunk * stride) {
    size_t n = 0;
    for (uint64_t x = base; n < k_chunk && x < (uint64_t{1} << 32); x += stride) {
      in[n++] = static_cast<uint32_t>(x);
    }
    cast_elements(Dtype::k_float32, to, in.data(), out.data(), n, path);
    for (size_t i = 0; i < n; ++i) {
      if (out[i] != ref(in[i])) {
        if (++mismatches <= 5) {
          ADD_FAILURE() << dtype_name(to) << " of 0x" << std::hex << in[i] << ": got 0x" << out[i]
                        << ", want 0x" << ref(in[i]);
        }
      }
    }
  }
  return mismatches;
}

// Every float32 bit pattern takes about 12 s per cast here; a stride of 17
// (odd, so each low-bit pattern and each exponent shows up) keeps the suite
// to about two seconds. tools/cast_sweep.sh sets CKPT_CAST_SWEEP_STRIDE=1 for
// the exhaustive sweep.
uint64_t sweep_stride() {
  const char* env = std::getenv("CKPT_CAST_SWEEP_STRIDE");
  return env != nullptr && std::strtoull(env, nullptr, 10) > 0 ? std::strtoull(env, nullptr, 10) : 17;
}
const uint64_t k_stride = sweep_stride();

TEST(CastSweep, Float32ToBfloat16MatchesTheReference) {
  EXPECT_EQ(sweep(Dtype::k_bfloat16, CastPath::k_portable, k_stride, ref_bf16), 0u);
}

TEST(CastSweep, Float32ToFloat16MatchesTheReference) {
  EXPECT_EQ(sweep(Dtype::k_float16, CastPath::k_portable, k_stride, ref_f16), 0u);
}

TEST(CastSweep, Float32ToBfloat16FastPathMatchesTheReference) {
  if (!cast_has_fast_path(Dtype::k_float32, Dtype::k_bfloat16)) {
    GTEST_SKIP() << "no AVX-512 on this CPU (or CKPT_SIMD caps it)";
  }
  EXPECT_EQ(sweep(Dtype::k_bfloat16, CastPath::k_best, k_stride, ref_bf16), 0u);
}

TEST(CastSweep, Float32ToFloat16FastPathMatchesTheReference) {
  if (!cast_has_fast_path(Dtype::k_float32, Dtype::k_float16)) {
    GTEST_SKIP() << "no F16C on this CPU";
  }
  EXPECT_EQ(sweep(Dtype::k_float16, CastPath::k_best, k_stride, ref_f16), 0u);
}

}  // namespace
}  // namespace ckpt::test
