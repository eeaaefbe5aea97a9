// What stderr is, and lines made to fit it (see terminal.h).
#include "terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ckpt::cli {
namespace {

bool is_utf8_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xc0) == 0x80;
}

size_t columns_of(const std::string& text) {
  size_t n = 0;
  for (char c : text) {
    n += is_utf8_continuation(c) ? 0 : 1;
  }
  return n;
}

// The byte offset where the first `columns` characters of `text` end.
size_t offset_after(const std::string& text, size_t columns) {
  size_t seen = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!is_utf8_continuation(text[i])) {
      if (seen == columns) {
        return i;
      }
      ++seen;
    }
  }
  return text.size();
}

}  // namespace

Terminal stderr_terminal() {
  Terminal t;
  const char* term = std::getenv("TERM");
  t.smart = ::isatty(STDERR_FILENO) != 0 && term != nullptr && std::strcmp(term, "dumb") != 0;
  const char* no_color = std::getenv("NO_COLOR");
  t.color = t.smart && (no_color == nullptr || *no_color == '\0');
  struct winsize size {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
    t.width = size.ws_col;
  } else if (const char* columns = std::getenv("COLUMNS"); columns != nullptr) {
    int value = std::atoi(columns);
    t.width = value > 0 ? value : t.width;
  }
  return t;
}

std::string fit_to_width(const std::string& line, int width) {
  size_t room = width > 1 ? static_cast<size_t>(width - 1) : 1;
  if (columns_of(line) <= room) {
    return line;
  }
  return line.substr(0, offset_after(line, room - 1)) + "…";
}

std::string elide_left(const std::string& path, size_t columns) {
  size_t have = columns_of(path);
  if (have <= columns) {
    return path;
  }
  if (columns == 0) {
    return "";
  }
  return "…" + path.substr(offset_after(path, have - (columns - 1)));
}

std::string diagnostic_prefix(const char* level, const Terminal& terminal) {
  if (!terminal.color) {
    return std::string("ckpt-convert: ") + level + ": ";
  }
  const char* colour = std::strcmp(level, "error") == 0 ? "\033[1;31m" : "\033[1;33m";
  return std::string("ckpt-convert: ") + colour + level + "\033[0m: ";
}

void print_error_lines(const std::string& message) {
  std::string prefix = diagnostic_prefix("error", stderr_terminal());
  size_t start = 0;
  while (start <= message.size()) {
    size_t end = message.find('\n', start);
    std::string line = message.substr(start, end == std::string::npos ? end : end - start);
    std::fprintf(stderr, "%s%s\n", prefix.c_str(), line.c_str());
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
}

}  // namespace ckpt::cli
