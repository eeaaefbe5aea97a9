// Casts between float32, float64, float16 and bfloat16 that reproduce torch
// 1.13's CPU `Tensor.to(dtype)` bit for bit (include/ckpt/cast.h lists the
// NaN each cast gives). Every narrowing to 16 bits rounds the float32 bit
// pattern with integer arithmetic, except float16 subnormals, which take one
// float add as torch's own code does; nothing depends on flush-to-zero or
// denormals-are-zero, and like torch everything assumes the default
// round-to-nearest mode. float64 → float32 and the widenings to float64 are
// `static_cast`, exact or IEEE round-to-nearest-even in hardware, as in torch.
//
// The portable loops run in blocks of `k_block` elements with a constant trip
// count, which GCC's -O2 ("very cheap" cost model) vectorises without a
// scalar epilogue; only the last partial block runs one element at a time.
// float32 → float16 has a second implementation with F16C's `vcvtps2ph`,
// chosen at run time; it replaces NaN lanes with the canonical quiet NaN
// before converting, because the instruction keeps the payload's top bits
// (0x7FD8C09A → 0x7EC6) where torch gives 0x7E00. float32 → bfloat16 runs
// the portable loop built for AVX-512 where the CPU has it.
#include "ckpt/cast.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "util/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define CKPT_CAST_F16C 1
#endif

namespace ckpt {
namespace {

constexpr size_t k_block = 16;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// `condition ? a : b` as mask arithmetic, which GCC keeps branch-free (a
// ternary becomes a jump the vectoriser refuses).
[[gnu::always_inline]] inline uint32_t choose(bool condition, uint32_t a, uint32_t b) {
  return b ^ ((a ^ b) & (0u - static_cast<uint32_t>(condition)));
}

// float32 bits → float16 bits, round to nearest even. Each range is computed
// without branches and the right one selected, so that the loop vectorises.
[[gnu::always_inline]] inline uint16_t f16_from_f32_bits(uint32_t x) {
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  // Normal float16 (|x| >= 2^-14): rebias the exponent from 127 to 15 and
  // round the 23-bit mantissa to 10 bits; a carry moves into the exponent,
  // up to 0x7C00 (inf) just below the overflow threshold.
  const uint32_t r = a - (112u << 23);
  const uint32_t normal = (r + 0xFFFu + ((r >> 13) & 1u)) >> 13;
  // Subnormal float16 (|x| < 2^-14): adding 0.5 leaves the value's multiple
  // of 2^-24 (the float16 subnormal step) in the float32 mantissa, rounded to
  // nearest even by the FPU (torch's own trick). The sum is a normal float32,
  // so flush-to-zero cannot touch it, and the float32 subnormals that
  // denormals-are-zero would read as zero round to zero anyway.
  const uint32_t subnormal = bits_of(float_of(a) + 0.5f) - 0x3F000000u;
  uint32_t h = choose(a >= 0x38800000u, normal, subnormal);
  h = choose(a >= 0x477FF000u, 0x7C00u, h);  // 65520 and up round to inf
  h = choose(a > 0x7F800000u, 0x7E00u, h);   // NaN: torch's Half(float)
  return static_cast<uint16_t>(h | sign);
}

// float32 bits → bfloat16 bits, round to nearest even on the raw bits; ±inf
// stays, finite overflow rounds to ±inf. `nan` is what a NaN becomes.
[[gnu::always_inline]] inline uint16_t bf16_from_f32_bits(uint32_t x, uint16_t nan) {
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(choose((x & 0x7FFFFFFFu) > 0x7F800000u, nan, rounded));
}

// float16 bits → float32 bits, exact. NaN keeps sign and payload and gains
// the quiet bit (0x7C01 → 0x7FC02000), as torch's conversion does.
[[gnu::always_inline]] inline uint32_t f32_bits_from_f16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  const uint32_t normal = ((e + 112u) << 23) | (m << 13);
  // m * 2^-24 is exact in float32 and a normal float32.
  const uint32_t subnormal = bits_of(static_cast<float>(static_cast<int32_t>(m)) * 0x1p-24f);
  const uint32_t special = 0x7F800000u | (m << 13) | choose(m != 0, 0x400000u, 0u);
  uint32_t f = choose(e == 0, subnormal, normal);
  f = choose(e == 0x1F, special, f);
  return f | sign;
}

// One element conversion per dtype pair, on the elements' storage types.
[[gnu::always_inline]] inline uint16_t f32_to_f16(uint32_t x) { return f16_from_f32_bits(x); }
[[gnu::always_inline]] inline uint16_t f32_to_bf16(uint32_t x) { return bf16_from_f32_bits(x, 0xFFFFu); }
[[gnu::always_inline]] inline double f32_to_f64(uint32_t x) { return static_cast<double>(float_of(x)); }
[[gnu::always_inline]] inline uint32_t f64_to_f32(double d) { return bits_of(static_cast<float>(d)); }
[[gnu::always_inline]] inline uint16_t f64_to_f16(double d) { return f16_from_f32_bits(bits_of(static_cast<float>(d))); }
[[gnu::always_inline]] inline uint16_t f64_to_bf16(double d) { return bf16_from_f32_bits(bits_of(static_cast<float>(d)), 0xFFFFu); }
[[gnu::always_inline]] inline uint32_t f16_to_f32(uint16_t h) { return f32_bits_from_f16(h); }
[[gnu::always_inline]] inline double f16_to_f64(uint16_t h) { return static_cast<double>(float_of(f32_bits_from_f16(h))); }
[[gnu::always_inline]] inline uint16_t f16_to_bf16(uint16_t h) { return bf16_from_f32_bits(f32_bits_from_f16(h), 0x7FC0u); }
[[gnu::always_inline]] inline uint32_t bf16_to_f32(uint16_t b) { return static_cast<uint32_t>(b) << 16; }
[[gnu::always_inline]] inline double bf16_to_f64(uint16_t b) { return static_cast<double>(float_of(static_cast<uint32_t>(b) << 16)); }
[[gnu::always_inline]] inline uint16_t bf16_to_f16(uint16_t b) { return f16_from_f32_bits(static_cast<uint32_t>(b) << 16); }

using Loop = void (*)(const unsigned char* in, unsigned char* out, size_t count);

// (Always inlined, so that the loop built for AVX-512 below gets vector
// code of its width from it.)
template <typename In, typename Out, Out (*convert)(In)>
[[gnu::always_inline]] inline void cast_loop(const unsigned char* in, unsigned char* out,
                                             size_t count) {
  size_t i = 0;
  for (; i + k_block <= count; i += k_block) {
    In x[k_block];
    Out y[k_block];
    std::memcpy(x, in + i * sizeof(In), sizeof x);
    for (size_t j = 0; j < k_block; ++j) {
      y[j] = convert(x[j]);
    }
    std::memcpy(out + i * sizeof(Out), y, sizeof y);
  }
  for (; i < count; ++i) {
    In x;
    std::memcpy(&x, in + i * sizeof(In), sizeof x);
    const Out y = convert(x);
    std::memcpy(out + i * sizeof(Out), &y, sizeof y);
  }
}

#ifdef CKPT_CAST_F16C
// float32 → float16 eight at a time with F16C (vcvtps2ph, round to nearest
// even from the immediate, whatever MXCSR says). NaN lanes are first replaced
// by sign | 0x7FC00000, which converts to torch's 0x7E00 | sign.
__attribute__((target("f16c,avx2"))) void f32_to_f16_f16c(const unsigned char* in,
                                                           unsigned char* out, size_t count) {
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256 quiet_nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000));
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256 x = _mm256_loadu_ps(reinterpret_cast<const float*>(in + i * 4));
    const __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const __m256 canonical = _mm256_or_ps(_mm256_and_ps(x, sign_mask), quiet_nan);
    x = _mm256_blendv_ps(x, canonical, is_nan);
    const __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * 2), h);
  }
  cast_loop<uint32_t, uint16_t, f32_to_f16>(in + i * 4, out + i * 2, count - i);
}

// float32 → bfloat16: the portable loop built for AVX-512, chosen at run
// time. The same integer arithmetic, so the same bits, at three times the
// portable loop's speed (13 -> 40-47 GB/s here), which matters since a
// verified cast runs the check beside it (reference_cast.cc). Not for AVX2:
// without AVX-512BW's 32 -> 16-bit narrowing GCC's AVX2 code for this loop
// ran at a third of the portable loop's speed (CKPT_SIMD=avx2, 2 against 6
// GB/s).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void f32_to_bf16_avx512(
    const unsigned char* in, unsigned char* out, size_t count) {
  cast_loop<uint32_t, uint16_t, f32_to_bf16>(in, out, count);
}

// The AVX-512 loop where the CPU has it, or null.
Loop f32_to_bf16_wide() {
  return simd_level() == SimdLevel::k_avx512 ? &f32_to_bf16_avx512 : nullptr;
}

bool cpu_has_f16c() {
  static const bool has = [] {
    // F16C is bit 29 of ECX in CPUID leaf 1: clang 14's __builtin_cpu_supports
    // does not know "f16c" (a compile error, which broke the fuzz build).
    unsigned eax = 0;
    unsigned ebx = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    __builtin_cpu_init();
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0 &&
           simd_level() != SimdLevel::k_baseline;
  }();
  return has;
}
#endif

bool is_float(Dtype dtype) {
  return dtype == Dtype::k_float32 || dtype == Dtype::k_float64 || dtype == Dtype::k_float16 ||
         dtype == Dtype::k_bfloat16;
}

// The portable loop for `from` → `to`, or null for equal dtypes.
Loop portable_loop(Dtype from, Dtype to) {
  switch (from) {
    case Dtype::k_float32:
      switch (to) {
        case Dtype::k_float64: return cast_loop<uint32_t, double, f32_to_f64>;
        case Dtype::k_float16: return cast_loop<uint32_t, uint16_t, f32_to_f16>;
        case Dtype::k_bfloat16: return cast_loop<uint32_t, uint16_t, f32_to_bf16>;
        default: return nullptr;
      }
    case Dtype::k_float64:
      switch (to) {
        case Dtype::k_float32: return cast_loop<double, uint32_t, f64_to_f32>;
        case Dtype::k_float16: return cast_loop<double, uint16_t, f64_to_f16>;
        case Dtype::k_bfloat16: return cast_loop<double, uint16_t, f64_to_bf16>;
        default: return nullptr;
      }
    case Dtype::k_float16:
      switch (to) {
        case Dtype::k_float32: return cast_loop<uint16_t, uint32_t, f16_to_f32>;
        case Dtype::k_float64: return cast_loop<uint16_t, double, f16_to_f64>;
        case Dtype::k_bfloat16: return cast_loop<uint16_t, uint16_t, f16_to_bf16>;
        default: return nullptr;
      }
    case Dtype::k_bfloat16:
      switch (to) {
        case Dtype::k_float32: return cast_loop<uint16_t, uint32_t, bf16_to_f32>;
        case Dtype::k_float64: return cast_loop<uint16_t, double, bf16_to_f64>;
        case Dtype::k_float16: return cast_loop<uint16_t, uint16_t, bf16_to_f16>;
        default: return nullptr;
      }
    default:
      return nullptr;
  }
}

}  // namespace

bool castable(Dtype from, Dtype to) { return is_float(from) && is_float(to); }

size_t cast_output_bytes(Dtype to, size_t count) {
  return count * static_cast<size_t>(element_size(to));
}

bool cast_has_fast_path(Dtype from, Dtype to) {
#ifdef CKPT_CAST_F16C
  if (from == Dtype::k_float32 && to == Dtype::k_bfloat16) {
    return f32_to_bf16_wide() != nullptr;
  }
  return from == Dtype::k_float32 && to == Dtype::k_float16 && cpu_has_f16c();
#else
  return false;
#endif
}

void cast_elements(Dtype from, Dtype to, const void* in, void* out, size_t count, CastPath path) {
  if (!castable(from, to)) {
    throw std::invalid_argument("cast from " + std::string(dtype_name(from)) + " to " +
                                std::string(dtype_name(to)) +
                                ": not a cast between float32, float64, float16 and bfloat16");
  }
  const auto* src = static_cast<const unsigned char*>(in);
  auto* dst = static_cast<unsigned char*>(out);
  if (from == to) {
    std::memmove(dst, src, cast_output_bytes(to, count));
    return;
  }
#ifdef CKPT_CAST_F16C
  if (path == CastPath::k_best && cast_has_fast_path(from, to)) {
    if (to == Dtype::k_bfloat16) {
      f32_to_bf16_wide()(src, dst, count);
    } else {
      f32_to_f16_f16c(src, dst, count);
    }
    return;
  }
#endif
  portable_loop(from, to)(src, dst, count);
}

}  // namespace ckpt
