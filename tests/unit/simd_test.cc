// CKPT_SIMD caps the vector extensions the hand-built loops use
// (src/util/simd.h): tests/CMakeLists.txt runs the CRC-32 and cast tests
// again under CKPT_SIMD=avx2 and =baseline, so that the builds a CPU with
// AVX-512 never picks are tested too. This checks the cap took.
#include "util/simd.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace ckpt {
namespace {

TEST(Simd, TheEnvironmentCapsTheLevel) {
  const char* value = std::getenv("CKPT_SIMD");
  std::string cap = value != nullptr ? value : "";
  if (cap == "baseline") {
    EXPECT_EQ(simd_level(), SimdLevel::k_baseline);
  } else if (cap == "avx2") {
    EXPECT_NE(simd_level(), SimdLevel::k_avx512);
  } else {
    GTEST_SKIP() << "CKPT_SIMD is not set: the CPU's own level";
  }
}

}  // namespace
}  // namespace ckpt
