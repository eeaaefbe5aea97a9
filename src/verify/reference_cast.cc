// The reference rounds by value, not by bits: it finds the two values of the
// target format around x (bfloat16: x's bits cut to 16 and the next value;
// float16: a binary search in the table of every float16 value, decoded from
// its fields with ldexp), measures both distances in double (exact for
// neighbours of a float) and takes the nearer, ties to the even one. The
// writer (cast.cc) instead adds a rounding bias to the raw bits, or uses F16C.
#include "reference_cast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "util/simd.h"

namespace ckpt {
namespace {

template <typename T>
T load(const uint8_t* p, size_t i) {
  T value;
  std::memcpy(&value, p + i * sizeof(T), sizeof(T));
  return value;
}

float float_of(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// The value of bfloat16 bits; 0x7F80 above the largest finite one stands for
// 2^128, where rounding up overflows to inf.
double bf16_value(uint32_t bits) {
  if ((bits & 0x7FFFu) == 0x7F80u) {
    return std::ldexp(bits & 0x8000u ? -1.0 : 1.0, 128);
  }
  return static_cast<double>(float_of(bits << 16));
}

uint16_t bf16_of(float x) {
  uint32_t bits = bits_of(x);
  if (std::isinf(x)) {
    return static_cast<uint16_t>(bits >> 16);
  }
  uint32_t down = bits >> 16;  // toward zero
  uint32_t up = down + 1;      // away from zero
  double distance_down = std::fabs(static_cast<double>(x) - bf16_value(down));
  double distance_up = std::fabs(bf16_value(up) - static_cast<double>(x));
  if (distance_down < distance_up || (distance_down == distance_up && (down & 1u) == 0)) {
    return static_cast<uint16_t>(down);
  }
  return static_cast<uint16_t>(up);
}

// float16 bits decoded from their fields: sign, 5-bit exponent, 10-bit
// fraction.
float f16_value(uint16_t bits) {
  int exponent = (bits >> 10) & 0x1F;
  int fraction = bits & 0x3FF;
  float magnitude;
  if (exponent == 0x1F) {
    magnitude = fraction == 0 ? INFINITY : NAN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(fraction), -24);
  } else {
    magnitude = std::ldexp(static_cast<float>(fraction + 1024), exponent - 25);
  }
  return bits & 0x8000u ? -magnitude : magnitude;
}

// Every finite non-negative float16 value, by bits (ascending in value too),
// and 65536 standing for the overflow to inf (0x7C00).
const std::vector<double>& f16_table() {
  static const std::vector<double> table = [] {
    std::vector<double> values;
    for (uint32_t bits = 0; bits < 0x7C00u; ++bits) {
      values.push_back(f16_value(static_cast<uint16_t>(bits)));
    }
    values.push_back(65536.0);
    return values;
  }();
  return table;
}

uint16_t f16_bits(float x) {
  const std::vector<double>& table = f16_table();
  double magnitude = std::fabs(static_cast<double>(x));
  uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  if (magnitude >= table.back()) {
    return static_cast<uint16_t>(0x7C00u | sign);
  }
  // table[up] is the first value above x; table[up - 1] the one at or below.
  size_t up = static_cast<size_t>(std::upper_bound(table.begin(), table.end(), magnitude) -
                                  table.begin());
  size_t down = up - 1;
  double distance_down = magnitude - table[down];
  double distance_up = table[up] - magnitude;
  bool take_down = distance_down < distance_up || (distance_down == distance_up && down % 2 == 0);
  return static_cast<uint16_t>((take_down ? down : up) | sign);
}

// The element `i` of `source` as a double (its value, exactly), and whether
// it is NaN.
double value_of(Dtype from, const uint8_t* source, size_t i) {
  switch (from) {
    case Dtype::k_float64: return load<double>(source, i);
    case Dtype::k_float32: return load<float>(source, i);
    case Dtype::k_float16: return f16_value(load<uint16_t>(source, i));
    default: return float_of(static_cast<uint32_t>(load<uint16_t>(source, i)) << 16);
  }
}

// The same for float32 → bfloat16 and float32 → float16, the casts of
// nearly every checkpoint, written as straight-line arithmetic that the
// compiler turns into vector code: about 1 ns an element where the search
// above takes 10. Still by value: the distances to the two neighbours, and
// float16 by scaling x to its step and rounding with the 2^23 trick.

// float32 bits → bfloat16 bits.
inline uint16_t bf16_by_value(uint32_t bits) {
  const uint32_t m = bits & 0x7FFFFFFFu;
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t down = m >> 16;
  // In the top binade the value above may be 2^128: measure there with
  // everything halved (one off the exponent), which keeps the distances exact.
  const uint32_t half = m >= 0x7F000000u ? 0x00800000u : 0u;
  const float x = float_of(m - half);
  const float below = float_of((down << 16) - half);
  const float above = float_of(((down + 1) << 16) - half);
  const float to_below = x - below;  // exact: x and its neighbours are within a factor of 2
  const float to_above = above - x;
  const bool take_below = to_below < to_above || (to_below == to_above && (down & 1u) == 0);
  uint32_t result = (take_below ? down : down + 1) | sign;
  result = m == 0x7F800000u ? (bits >> 16) : result;  // ±inf
  result = m > 0x7F800000u ? 0xFFFFu : result;        // NaN, as documented
  return static_cast<uint16_t>(result);
}

// The same for |x| below 2^127, the values of nearly every tensor, in fewer
// steps: no top binade (where the value above may be 2^128), no inf, no NaN.
// The sign and the bits cut to 16 are rounded up together, which carries
// into the magnitude only. A block holding a larger |x| is checked by
// bf16_by_value (first_difference_from_float32). Both agreed with the
// writer on all 2^32 float32 patterns (swept by hand on 2026-12-02;
// reference_cast_test sweeps every 251st).
constexpr uint32_t k_bf16_common_below = 0x7F000000u;  // 2^127

inline uint16_t bf16_by_value_common(uint32_t bits) {
  const uint32_t m = bits & 0x7FFFFFFFu;
  const uint32_t below = m & 0xFFFF0000u;
  const float x = float_of(m);
  const float to_below = x - float_of(below);  // exact, as above
  const float to_above = float_of(below + 0x10000u) - x;
  const bool up = to_above < to_below || (to_above == to_below && (m & 0x10000u) != 0);
  return static_cast<uint16_t>((bits >> 16) + (up ? 1u : 0u));
}

// float32 bits → float16 bits.
inline uint16_t f16_by_value(uint32_t bits) {
  const uint32_t m = bits & 0x7FFFFFFFu;
  const uint32_t sign = (bits >> 16) & 0x8000u;
  // The float16 exponent of x (at least -14, where the subnormals' step is
  // 2^-24) and x in units of its step, 2^(e-10): exact, a power of two.
  int32_t e = static_cast<int32_t>(m >> 23) - 127;
  const bool past_range = e > 15;  // 2^16 and up: float16's inf
  e = e < -14 ? -14 : e;
  e = past_range ? 15 : e;
  const float in_steps = float_of(m) * float_of(static_cast<uint32_t>(137 - e) << 23);
  // Round to the nearest integer, ties to even: adding 2^23 leaves no
  // fraction bits, and the FPU rounds to nearest even.
  const float rounded = (in_steps + 8388608.0f) - 8388608.0f;
  // Past the range (inf and NaN too) in_steps is up to 2^123, and converting
  // it to an integer would be undefined; that result is thrown away below.
  const float in_range = past_range ? 0.0f : rounded;
  uint32_t result = (static_cast<uint32_t>(e + 14) << 10) + static_cast<uint32_t>(in_range);
  result = result >= 0x7C00u || past_range ? 0x7C00u : result;  // overflow, ±inf
  result = m > 0x7F800000u ? 0x7E00u : result;        // NaN, as documented
  return static_cast<uint16_t>(result | sign);
}

// Whether `by_value`'s cast of the block's elements differs anywhere from
// `written`: no early exit, so the loop vectorizes (loads through memcpy:
// neither pointer need be aligned; copying each block into aligned arrays
// first halved the speed).
template <uint16_t (*by_value)(uint32_t)>
__attribute__((always_inline)) inline bool block_differs(const uint8_t* source,
                                                         const uint8_t* written, size_t n) {
  uint32_t differs = 0;
  for (size_t i = 0; i < n; ++i) {
    differs |= static_cast<uint32_t>(by_value(load<uint32_t>(source, i)) ^
                                     load<uint16_t>(written, i));
  }
  return differs != 0;
}

// Whether the block may differ, by `common`, which is right for |x| below
// `common_below` only: true where it sees a difference, or a larger |x|
// that only `by_value` can check. In one pass (the largest |x| found in a
// pass of its own cost a third of the speed).
template <uint16_t (*common)(uint32_t), uint32_t common_below>
__attribute__((always_inline)) inline bool common_block_differs(const uint8_t* source,
                                                                const uint8_t* written,
                                                                size_t n) {
  uint32_t differs = 0;
  uint32_t largest = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = load<uint32_t>(source, i);
    largest = std::max(largest, bits & 0x7FFFFFFFu);
    differs |= static_cast<uint32_t>(common(bits) ^ load<uint16_t>(written, i));
  }
  return differs != 0 || largest >= common_below;
}

// The first element of `count` float32 `source` whose cast `by_value` gives
// differs from `written`, or `count`. Blocks are checked whole, by `common`
// when every |x| of the block lies below `common_below` (`by_value` agrees
// with it there), and again by `by_value` when one does not or `common` sees
// a difference; a block that still differs is searched.
template <uint16_t (*by_value)(uint32_t), uint16_t (*common)(uint32_t), uint32_t common_below>
__attribute__((always_inline)) inline size_t first_difference_from_float32(
    const uint8_t* source, const uint8_t* written, size_t count) {
  constexpr size_t k_block = 4096;
  for (size_t start = 0; start < count; start += k_block) {
    size_t n = std::min(k_block, count - start);
    const uint8_t* in = source + start * 4;
    const uint8_t* out = written + start * 2;
    bool maybe = common == by_value || common_block_differs<common, common_below>(in, out, n);
    if (maybe && block_differs<by_value>(in, out, n)) {
      for (size_t i = 0; i < n; ++i) {
        if (by_value(load<uint32_t>(in, i)) != load<uint16_t>(out, i)) {
          return start + i;
        }
      }
    }
  }
  return count;
}

// The same loops built for AVX2 (eight lanes, not SSE2's four) and AVX-512
// (sixteen), chosen at run time: the check runs on every buffer a verified
// cast writes (float32 -> bfloat16 with AVX-512 here: 28 GB/s of source,
// float16 24 GB/s; before the `common` pass, 14 and 16).
template <uint16_t (*by_value)(uint32_t), uint16_t (*common)(uint32_t), uint32_t common_below>
__attribute__((target("avx2"))) size_t first_difference_avx2(const uint8_t* source,
                                                              const uint8_t* written,
                                                              size_t count) {
  return first_difference_from_float32<by_value, common, common_below>(source, written, count);
}

template <uint16_t (*by_value)(uint32_t), uint16_t (*common)(uint32_t), uint32_t common_below>
__attribute__((target("avx512f,avx512bw,avx512vl"))) size_t first_difference_avx512(
    const uint8_t* source, const uint8_t* written, size_t count) {
  return first_difference_from_float32<by_value, common, common_below>(source, written, count);
}

template <uint16_t (*by_value)(uint32_t), uint16_t (*common)(uint32_t), uint32_t common_below>
size_t first_difference_dispatched(const uint8_t* source, const uint8_t* written, size_t count) {
  switch (simd_level()) {
    case SimdLevel::k_avx512:
      return first_difference_avx512<by_value, common, common_below>(source, written, count);
    case SimdLevel::k_avx2:
      return first_difference_avx2<by_value, common, common_below>(source, written, count);
    default:
      return first_difference_from_float32<by_value, common, common_below>(source, written,
                                                                           count);
  }
}

}  // namespace

size_t first_cast_difference(Dtype from, Dtype to, const uint8_t* source, const uint8_t* written,
                             size_t count) {
  if (from == Dtype::k_float32 && to == Dtype::k_bfloat16) {
    return first_difference_dispatched<bf16_by_value, bf16_by_value_common,
                                       k_bf16_common_below>(source, written, count);
  }
  if (from == Dtype::k_float32 && to == Dtype::k_float16) {
    return first_difference_dispatched<f16_by_value, f16_by_value, 0>(source, written, count);
  }
  for (size_t i = 0; i < count; ++i) {
    double x = value_of(from, source, i);
    bool sign = std::signbit(x);
    bool same = false;
    switch (to) {
      case Dtype::k_float64: {
        double got = load<double>(written, i);
        same = std::isnan(x) ? std::isnan(got)
                             : std::memcmp(&got, &x, 8) == 0;
        break;
      }
      case Dtype::k_float32: {
        float want = static_cast<float>(x);  // exact from 16 bits; rounds from float64
        uint32_t got = load<uint32_t>(written, i);
        same = std::isnan(x) ? std::isnan(float_of(got)) : got == bits_of(want);
        break;
      }
      case Dtype::k_float16: {
        uint16_t got = load<uint16_t>(written, i);
        uint16_t want = std::isnan(x) ? static_cast<uint16_t>(0x7E00u | (sign ? 0x8000u : 0u))
                                      : f16_bits(static_cast<float>(x));
        same = from == Dtype::k_float16 ? got == load<uint16_t>(source, i) : got == want;
        break;
      }
      default: {  // bfloat16
        uint16_t got = load<uint16_t>(written, i);
        uint16_t nan = from == Dtype::k_float16 ? 0x7FC0u : 0xFFFFu;
        uint16_t want = std::isnan(x) ? nan : bf16_of(static_cast<float>(x));
        same = from == Dtype::k_bfloat16 ? got == load<uint16_t>(source, i) : got == want;
        break;
      }
    }
    if (!same) {
      return i;
    }
  }
  return count;
}

}  // namespace ckpt
