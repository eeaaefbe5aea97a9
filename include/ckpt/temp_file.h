// A temporary file beside its destination that becomes the destination only
// by `commit()`: until then the destructor removes it.
#pragma once

#include <string>

namespace ckpt {

class TempFile {
public:
  // Creates `.<name>.tmp-XXXXXX` in `destination`'s folder. Throws `Error`
  // naming the folder when it cannot.
  explicit TempFile(const std::string& destination);
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();

  int fd() const { return m_fd; }
  const std::string& path() const { return m_path; }

  // Closes the file and renames it over the destination.
  void commit();

private:
  std::string m_destination;
  std::string m_path;
  int m_fd = -1;
  bool m_committed = false;
};

// For fatal-signal handlers (async-signal-safe): removes the temporary files
// being written, if any (several when `batch` converts on threads). SIGINT, SIGTERM and SIGHUP do it themselves; the
// SIGBUS handler of mapped_file.cc calls it.
void remove_live_temp_file() noexcept;

// Writes `text` to stderr with write(2) only: async-signal-safe, for the
// messages of those handlers.
void say_signal_safe(const char* text) noexcept;

}  // namespace ckpt
