// Which vector extensions the loops built for them may use: what the CPU has,
// capped by the environment variable CKPT_SIMD (`avx512`, `avx2` or
// `baseline`, which also turns PCLMUL off for the CRC-32), so that every
// build of a loop can be tested on one machine
// (tests/CMakeLists.txt runs the CRC-32 and cast tests under each cap), and a
// suspected miscompiled path can be ruled out in the field. Internal.
#pragma once

namespace ckpt {

enum class SimdLevel { k_baseline = 0, k_avx2 = 1, k_avx512 = 2 };

// k_avx512: AVX-512 F, BW and VL; k_avx2: AVX2; read once. An unknown
// CKPT_SIMD value is ignored (no cap).
SimdLevel simd_level();

}  // namespace ckpt
