// A progress bar on stderr for long conversions, shown only when stderr is a
// terminal that takes escape codes (ninja's LinePrinter, ccache's
// ProgressBar). It names the file, fits the terminal's width (a line that
// wraps leaves a copy behind at each redraw) and counts MB of 10^6 bytes, as
// the report does.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "ckpt/bytes.h"

namespace ckpt::cli {

class ProgressBar {
public:
  // A bar when stderr is a smart terminal (terminal.h), `quiet` is false and
  // `input` is large enough for the wait to be noticed; otherwise null.
  static std::unique_ptr<ProgressBar> for_stderr(const std::string& input, bool quiet);

  ProgressFn callback();
  // Erases the bar's line.
  void clear();

private:
  void update(const char* stage, uint64_t done, uint64_t total);

  explicit ProgressBar(std::string name) : m_name(std::move(name)) {}

  std::string m_name;  // the input's file name
  std::chrono::steady_clock::time_point m_last{};
  bool m_shown = false;
};

}  // namespace ckpt::cli
