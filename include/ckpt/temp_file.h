// A temporary file beside its destination that becomes the destination only
// by `commit()`: until then the destructor removes it. While it is written it
// holds an exclusive flock(2), so that a process killed with SIGKILL (which
// no handler sees) leaves a temporary file no one holds, and a later run in
// that folder removes it (`remove_stale_temp_files`).
#pragma once

#include <cstdint>
#include <string>

namespace ckpt {

class TempFile {
public:
  // Creates `.<name>.tmp-XXXXXX` in `destination`'s folder and locks it; the
  // first TempFile of the process in a folder removes that folder's stale
  // temporary files first (and warns with what it freed). Throws `Error`
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
  int m_lock_fd = -1;  // a dup of m_fd: holds the lock until the rename is done
  bool m_committed = false;
};

// What `remove_stale_temp_files` removed.
struct StaleTempFiles {
  size_t files = 0;
  uint64_t bytes = 0;
};

// Removes the temporary files `.<name>.tmp-XXXXXX` in `folder` that no live
// process holds locked: those of conversions killed with SIGKILL (the OOM
// killer, a preemption, a reboot). A file another process holds is kept.
StaleTempFiles remove_stale_temp_files(const std::string& folder);

// For fatal-signal handlers (async-signal-safe): removes the temporary files
// being written, if any (several when `batch` converts on threads). SIGINT, SIGTERM and SIGHUP do it themselves; the
// SIGBUS handler of mapped_file.cc calls it.
void remove_live_temp_file() noexcept;

// Writes `text` to stderr with write(2) only: async-signal-safe, for the
// messages of those handlers.
void say_signal_safe(const char* text) noexcept;

}  // namespace ckpt
