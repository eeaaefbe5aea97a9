// Splitting one long scan of page-cache bytes over two cores: the writers
// (zip records made of pieces or casts) and verification (rereading what was
// written) both stream hundreds of megabytes through small buffers, and one
// core copies or reads only about 4 GB/s of page cache.
#pragma once

#include <cstdint>
#include <exception>
#include <thread>

namespace ckpt {

// From this many units on a scan is split: a thread costs tens of
// microseconds, 4 MiB of reading about one millisecond.
constexpr uint64_t k_split_from = uint64_t{4} << 20;

// Calls `scan(begin, end)` for [0, half) here and [half, size) on a second
// thread, and returns half: size / 2 rounded down to a multiple of `grain`
// from k_split_from on (when the machine has two cores), size below. What
// either throws is rethrown once both are done.
template <typename Scan>
uint64_t in_two_halves(uint64_t size, const Scan& scan, uint64_t grain = 1) {
  uint64_t half = size;
  std::exception_ptr helper_failed;
  std::thread helper;
  if (size >= k_split_from && std::thread::hardware_concurrency() >= 2) {
    half = size / 2 / grain * grain;
    helper = std::thread([&] {
      try {
        scan(half, size);
      } catch (...) {
        helper_failed = std::current_exception();
      }
    });
  }
  std::exception_ptr failed;
  try {
    scan(uint64_t{0}, half);
  } catch (...) {
    failed = std::current_exception();
  }
  if (helper.joinable()) {
    helper.join();
  }
  if (failed || helper_failed) {
    std::rethrow_exception(failed ? failed : helper_failed);
  }
  return half;
}

}  // namespace ckpt
