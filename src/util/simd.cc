#include "util/simd.h"

#include <cstdlib>
#include <string_view>

namespace ckpt {
namespace {

SimdLevel cpu_level() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return SimdLevel::k_avx512;
  }
  if (__builtin_cpu_supports("avx2")) {
    return SimdLevel::k_avx2;
  }
#endif
  return SimdLevel::k_baseline;
}

SimdLevel cap() {
  const char* value = std::getenv("CKPT_SIMD");
  std::string_view name = value != nullptr ? value : "";
  if (name == "baseline") {
    return SimdLevel::k_baseline;
  }
  if (name == "avx2") {
    return SimdLevel::k_avx2;
  }
  return SimdLevel::k_avx512;
}

}  // namespace

SimdLevel simd_level() {
  static const SimdLevel level = [] {
    SimdLevel cpu = cpu_level();
    SimdLevel most = cap();
    return static_cast<int>(cpu) < static_cast<int>(most) ? cpu : most;
  }();
  return level;
}

}  // namespace ckpt
