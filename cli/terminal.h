// What stderr is, for the lines that redraw (progress bars, batch status) and
// the colour of warnings and errors: ninja's LinePrinter in small. A line
// that redraws must never wrap, or each redraw leaves a line behind; escape
// codes go only to a terminal that understands them (not `TERM=dumb`, not a
// pipe or a log file); colour follows no-color.org's NO_COLOR.
#pragma once

#include <string>

namespace ckpt::cli {

struct Terminal {
  bool smart = false;  // stderr is a terminal that takes \r and escape codes
  bool color = false;  // and colour is wanted (NO_COLOR unset or empty)
  int width = 80;      // columns
};

// What stderr is now (its width is asked again each call: windows resize).
Terminal stderr_terminal();

// `line` cut to fit `width - 1` columns (the last column would wrap on some
// terminals), counting UTF-8 characters; a cut ends in `…`.
std::string fit_to_width(const std::string& line, int width);

// `path` shortened from the left to `columns` characters (`…/b/c.pth`): the
// end of a path tells which file it is.
std::string elide_left(const std::string& path, size_t columns);

// `ckpt-convert: error: ` (or `warning`), red (yellow) and bold when
// `terminal.color`.
std::string diagnostic_prefix(const char* level, const Terminal& terminal);

// Prints each line of `message` as `ckpt-convert: error: <line>` on stderr: a
// message may hold several problems, one per line (a rule file's). The one
// catch in main() and `check`, for a file it cannot read, print through it.
void print_error_lines(const std::string& message);

}  // namespace ckpt::cli
