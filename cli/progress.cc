// Progress bar (see progress.h). Redraws at most ten times a second.
#include "progress.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "terminal.h"

namespace ckpt::cli {
namespace {

constexpr uint64_t k_min_bytes = 64ull << 20;  // smaller inputs finish before a bar helps

}  // namespace

std::unique_ptr<ProgressBar> ProgressBar::for_stderr(const std::string& input, bool quiet) {
  struct stat info {};
  if (quiet || !stderr_terminal().smart || ::stat(input.c_str(), &info) != 0 ||
      static_cast<uint64_t>(info.st_size) < k_min_bytes) {
    return nullptr;
  }
  return std::unique_ptr<ProgressBar>(new ProgressBar(input.substr(input.rfind('/') + 1)));
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
  int width = stderr_terminal().width;
  int percent = total == 0 ? 100 : static_cast<int>(100 * done / total);
  char counts[96];
  std::snprintf(counts, sizeof counts, "%-6s %3d%% %.0f/%.0f MB", stage, percent,
                static_cast<double>(done) / 1e6, static_cast<double>(total) / 1e6);
  // `name  [=====     ] write  42% 512/1300 MB` in `room` columns: the counts
  // first, then the name (up to 24 columns, elided from the left), then the
  // bar in what is left (up to 30 columns; none under 5).
  size_t room = static_cast<size_t>(std::max(1, width - 1));
  size_t left = room > std::strlen(counts) ? room - std::strlen(counts) : 0;
  std::string name = elide_left(m_name, std::min<size_t>(24, left > 2 ? left - 2 : 0));
  left = left > name.size() + 2 ? left - name.size() - 2 : 0;
  size_t bar = std::min<size_t>(30, left > 3 ? left - 3 : 0);
  std::string line = name.empty() ? "" : name + "  ";
  if (bar >= 5) {
    size_t filled = bar * static_cast<size_t>(percent) / 100;
    line += "[" + std::string(filled, '=') + std::string(bar - filled, ' ') + "] ";
  }
  line += counts;
  std::fprintf(stderr, "\r\033[K%s", fit_to_width(line, width).c_str());
  std::fflush(stderr);
}

void ProgressBar::clear() {
  if (m_shown) {
    std::fputs("\r\033[K", stderr);
    m_shown = false;
  }
}

}  // namespace ckpt::cli
