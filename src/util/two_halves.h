// Splitting one long scan of page-cache bytes over two cores: the writers
// (zip records made of pieces or casts) and verification (rereading what was
// written) both stream hundreds of megabytes through small buffers, and one
// core copies or reads only about 4 GB/s of page cache.
#pragma once

#include <cstdint>
#include <exception>
#include <thread>

#include "util/helper_thread.h"

namespace ckpt {

// From this many units (bytes, or elements of a cast) on a scan is split:
// handing a half to the helper costs tens of microseconds, 1 MiB of reading
// about a quarter of a millisecond. It was 4 MiB while every split started a
// thread; at 1 MiB the 1.3 GB bench file's 4 MiB fp32 tensors are cast on
// both cores too (--dtype bf16 to .safetensors, 11 rounds side by side:
// 0.251 -> 0.226 s without verification, 0.353 -> 0.330 s with).
constexpr uint64_t k_split_from = uint64_t{1} << 20;

// Calls `scan(begin, end)` for [0, half) here and [half, size) on the helper
// thread (helper_thread.h), and returns half: size / 2 rounded down to a
// multiple of `grain` from k_split_from on (when the machine has two cores),
// size below. What either throws is rethrown once both are done.
template <typename Scan>
uint64_t in_two_halves(uint64_t size, const Scan& scan, uint64_t grain = 1) {
  static const bool two_cores = std::thread::hardware_concurrency() >= 2;
  if (size < k_split_from || !two_cores) {
    scan(uint64_t{0}, size);
    return size;
  }
  const uint64_t half = size / 2 / grain * grain;
  std::exception_ptr failed;
  std::exception_ptr helper_failed;
  run_beside(
      [&] {
        try {
          scan(half, size);
        } catch (...) {
          helper_failed = std::current_exception();
        }
      },
      [&] {
        try {
          scan(uint64_t{0}, half);
        } catch (...) {
          failed = std::current_exception();
        }
      });
  if (failed || helper_failed) {
    std::rethrow_exception(failed ? failed : helper_failed);
  }
  return half;
}

}  // namespace ckpt
