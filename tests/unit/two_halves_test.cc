// in_two_halves and run_beside: a scan from 1 Mi units on is split at its middle
// (rounded to the grain), the second half runs on the one helper thread the
// process keeps, and every unit is scanned once, whoever else is calling.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "util/two_halves.h"

namespace ckpt::test {
namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

// The ranges `in_two_halves(size, ..., grain)` scanned, sorted, and its result.
std::pair<Ranges, uint64_t> scanned(uint64_t size, uint64_t grain = 1) {
  std::mutex mutex;
  Ranges ranges;
  uint64_t half = in_two_halves(
      size,
      [&](uint64_t begin, uint64_t end) {
        std::lock_guard<std::mutex> lock(mutex);
        ranges.emplace_back(begin, end);
      },
      grain);
  std::sort(ranges.begin(), ranges.end());
  return {ranges, half};
}

bool two_cores() {
  return std::thread::hardware_concurrency() >= 2;
}

TEST(TwoHalves, BelowTheThresholdScansOnceHere) {
  auto [ranges, half] = scanned(k_split_from - 1);
  EXPECT_EQ(half, k_split_from - 1);
  EXPECT_EQ(ranges, (Ranges{{0, k_split_from - 1}}));
}

TEST(TwoHalves, SplitsAtTheMiddleRoundedDownToTheGrain) {
  if (!two_cores()) {
    GTEST_SKIP() << "one core: nothing is split";
  }
  const uint64_t size = k_split_from + 1001;
  auto [ranges, half] = scanned(size, 64);
  EXPECT_EQ(half, size / 2 / 64 * 64);
  EXPECT_EQ(ranges, (Ranges{{0, half}, {half, size}}));
}

TEST(TwoHalves, TheSecondHalfRunsOnOneKeptThread) {
  if (!two_cores()) {
    GTEST_SKIP() << "one core: nothing is split";
  }
  // A thread's own count of the second halves it ran: 1, 2, 3 on a kept
  // thread; 1 each time on new ones (whose ids the system may reuse).
  static thread_local int halves_run_here = 0;
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<int> counts;
  for (int call = 0; call < 3; ++call) {
    int count = 0;
    bool elsewhere = false;
    in_two_halves(k_split_from, [&](uint64_t begin, uint64_t) {
      if (begin != 0) {
        count = ++halves_run_here;
        elsewhere = std::this_thread::get_id() != caller;
      }
    });
    EXPECT_TRUE(elsewhere);
    counts.push_back(count);
  }
  EXPECT_EQ(counts, (std::vector<int>{counts[0], counts[0] + 1, counts[0] + 2}));
}

TEST(TwoHalves, WhatEitherHalfThrowsIsRethrownAndTheHelperServesOn) {
  for (bool second_throws : {false, true}) {
    EXPECT_THROW(in_two_halves(k_split_from * 2,
                               [&](uint64_t begin, uint64_t) {
                                 if ((begin != 0) == second_throws) {
                                   throw std::runtime_error("scan failed");
                                 }
                               }),
                 std::runtime_error);
    auto [ranges, half] = scanned(k_split_from * 2);
    EXPECT_EQ(ranges.back().second, k_split_from * 2) << "after a throw by half " << second_throws;
  }
}

TEST(TwoHalves, ACallFromInsideAHalfDoesNotWaitForItself) {
  Ranges inner;
  std::mutex mutex;
  in_two_halves(k_split_from, [&](uint64_t begin, uint64_t) {
    if (begin == 0) {
      return;
    }
    // On the helper: the nested split must find it busy and take a thread of its own.
    auto [ranges, half] = scanned(k_split_from);
    std::lock_guard<std::mutex> lock(mutex);
    inner = ranges;
  });
  // One core splits nothing, so no half starts past 0 and nothing nests.
  EXPECT_EQ(inner.size(), two_cores() ? 2u : 0u);
}

TEST(TwoHalves, CallersOnSeveralThreadsEachGetEveryUnitScannedOnce) {
  constexpr int k_threads = 3;
  constexpr int k_calls = 40;
  std::vector<int> complete(k_threads, 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < k_threads; ++t) {
    callers.emplace_back([&complete, t] {
      for (int call = 0; call < k_calls; ++call) {
        const uint64_t size = k_split_from + static_cast<uint64_t>(call * 7 + t);
        auto [ranges, half] = scanned(size);
        uint64_t covered = 0;
        for (const auto& [begin, end] : ranges) {
          if (begin != covered) {
            return;
          }
          covered = end;
        }
        if (covered == size) {
          ++complete[t];
        }
      }
    });
  }
  for (std::thread& caller : callers) {
    caller.join();
  }
  EXPECT_EQ(complete, std::vector<int>(k_threads, k_calls));
}

}  // namespace
}  // namespace ckpt::test
