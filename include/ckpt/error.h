// Errors and exit codes shared by the library and the executable.
//
// The library throws `ckpt::Error`; the executable catches it once at the top,
// prints `ckpt-convert: error: <message>` and exits with `status()` (as ninja's
// exit_status.h and ccache's single catch in ccache_main).
#pragma once

#include <stdexcept>
#include <string>

namespace ckpt {

// Process exit codes: the CLI contract (docs/architecture.md, "Errors and exit codes").
enum class ExitStatus : int {
  k_ok = 0,
  k_bad_input = 1,  // bad or unsupported input, I/O error
  k_usage = 2,
  k_verify_failed = 3,
  k_device_unavailable = 4,
  k_batch_failures = 5,  // `batch`: some inputs failed, the others were done
};

// The `status` of every command's JSON object, one vocabulary for all: `ok`
// (exit 0), `failed` (the work was done and the file did not pass:
// verification or a check failed, or some of a batch's inputs failed), or
// `error` (the work could not be done: bad input, usage, no device).
inline const char* run_status_name(int exit_code) {
  switch (exit_code) {
    case static_cast<int>(ExitStatus::k_ok): return "ok";
    case static_cast<int>(ExitStatus::k_verify_failed):
    case static_cast<int>(ExitStatus::k_batch_failures): return "failed";
    default: return "error";
  }
}

// An error the user can act on. `what()` is the whole message, already in the
// form `<file>[:<record>|@<offset>]: <what>: <cause>`.
class Error : public std::runtime_error {
public:
  explicit Error(const std::string& message, ExitStatus status = ExitStatus::k_bad_input)
      : std::runtime_error(message), m_status(status) {}

  ExitStatus status() const { return m_status; }

private:
  ExitStatus m_status;
};

// An error inside a decoder that does not yet know the file it reads: the
// caller adds the location prefix with `in_file()`.
class FormatError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// The one way a message is told where it happened: `where` (a file, or
// `file:record`) before each of its lines, joined by `: `, or directly when
// the line starts with a byte offset (`@12: …` → `file:record@12: …`).
inline std::string in_file_text(const std::string& where, const std::string& message) {
  std::string out;
  size_t start = 0;
  while (true) {
    size_t end = message.find('\n', start);
    std::string line = message.substr(start, end == std::string::npos ? end : end - start);
    out += (out.empty() ? "" : "\n") + where + (line.rfind('@', 0) == 0 ? "" : ": ") + line;
    if (end == std::string::npos) {
      return out;
    }
    start = end + 1;
  }
}

// Wraps a `FormatError` into an `Error` that names `where` (in_file_text).
inline Error in_file(const std::string& where, const FormatError& e) {
  return Error(in_file_text(where, e.what()));
}

}  // namespace ckpt
