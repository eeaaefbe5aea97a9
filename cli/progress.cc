// Progress bar (see progress.h). Redraws at most ten times a second.
#include "progress.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace ckpt::cli {
namespace {

constexpr uint64_t k_min_bytes = 64ull << 20;  // smaller inputs finish before a bar helps

}  // namespace

std::unique_ptr<ProgressBar> ProgressBar::for_stderr(const std::string& input, bool quiet) {
  struct stat info {};
  if (quiet || ::isatty(STDERR_FILENO) == 0 || ::stat(input.c_str(), &info) != 0 ||
      static_cast<uint64_t>(info.st_size) < k_min_bytes) {
    return nullptr;
  }
  return std::make_unique<ProgressBar>();
}

ProgressFn ProgressBar::callback() {
  return [this](const char* stage, uint64_t done, uint64_t total) { update(stage, done, total); };
}

void ProgressBar::update(const char* stage, uint64_t done, uint64_t total) {
  auto now = std::chrono::steady_clock::now();
  if (m_shown && done < total && now - m_last < std::chrono::milliseconds(100)) {
    return;
  }
  m_last = now;
  m_shown = true;
  constexpr int k_width = 30;
  int filled = total == 0 ? k_width : static_cast<int>(k_width * done / total);
  std::fprintf(stderr, "\r\033[K%-7s [%-*.*s] %3d%% %llu/%llu MB", stage, k_width, filled,
               "==============================", total == 0 ? 100 : static_cast<int>(100 * done / total),
               static_cast<unsigned long long>(done >> 20),
               static_cast<unsigned long long>(total >> 20));
  std::fflush(stderr);
}

void ProgressBar::clear() {
  if (m_shown) {
    std::fputs("\r\033[K", stderr);
    m_shown = false;
  }
}

}  // namespace ckpt::cli
