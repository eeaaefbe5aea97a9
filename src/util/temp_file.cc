// Temporary output files (see temp_file.h). Each live one is also recorded in
// a process-wide slot so that a signal handler can remove it on SIGINT/SIGTERM
// and SIGHUP, say so on stderr, and die of the signal as the shell expects.
// SIGKILL cannot be handled: each file is flock(2)ed while written instead,
// and the first write into a folder removes what no live process holds.
#include "ckpt/temp_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "ckpt/error.h"

namespace ckpt {
namespace {

// The live temporary files' paths and destinations, for the signal handler:
// one slot per file being written (`batch` writes several at a time, one per
// thread). A slot is claimed by a compare-and-swap of `state` from free to
// filling, and published as live once its paths are in; the handler reads
// live slots only. A file that finds no free slot is simply not covered.
struct LiveSlot {
  std::atomic<int> state{0};  // 0 free, 1 filling, 2 live
  std::atomic<const void*> owner{nullptr};  // the TempFile, so that it finds its slot again
  char path[4096] = {0};
  char destination[4096] = {0};
};
constexpr int k_free = 0;
constexpr int k_filling = 1;
constexpr int k_live = 2;
LiveSlot g_live[64];

// Frees the slot of the temporary file `owner`, if it has one.
void release_slot(const void* owner) {
  for (LiveSlot& slot : g_live) {
    if (slot.owner.load(std::memory_order_acquire) == owner) {
      slot.owner.store(nullptr, std::memory_order_relaxed);
      slot.state.store(k_free, std::memory_order_release);
      return;
    }
  }
}

const char* signal_name(int signal_number) {
  switch (signal_number) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
  }
}

void remove_and_reraise(int signal_number) {
  for (LiveSlot& slot : g_live) {
    if (slot.state.load(std::memory_order_acquire) == k_live) {
      ::unlink(slot.path);
      say_signal_safe("ckpt-convert: error: ");
      say_signal_safe(slot.destination);
      say_signal_safe(": interrupted by ");
      say_signal_safe(signal_name(signal_number));
      say_signal_safe("; the unfinished output was removed\n");
    }
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

std::string folder_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    return ".";
  }
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// True when `path` still names the file open as `fd` (no one removed or
// replaced it since it was opened); `opened` gets the file's status.
bool name_leads_to(const std::string& path, int fd, struct stat& opened) {
  struct stat linked {};
  return ::fstat(fd, &opened) == 0 && ::lstat(path.c_str(), &linked) == 0 &&
         linked.st_ino == opened.st_ino && linked.st_dev == opened.st_dev;
}

// True for a name TempFile gives: `.<name>.tmp-` and six mkstemp characters.
bool is_temp_name(const std::string& name) {
  constexpr size_t k_suffix = 11;  // ".tmp-XXXXXX"
  if (name.size() < 2 + k_suffix || name[0] != '.' ||
      name.compare(name.size() - k_suffix, 5, ".tmp-") != 0) {
    return false;
  }
  for (size_t i = name.size() - 6; i < name.size(); ++i) {
    if (std::isalnum(static_cast<unsigned char>(name[i])) == 0) {
      return false;
    }
  }
  return true;
}

// Removes the stale temporary files of `folder` once per process (a batch
// writes many outputs into one folder) and says what it freed.
void sweep_folder_once(const std::string& folder) {
  static std::mutex mutex;
  static std::set<std::string> swept;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!swept.insert(folder).second) {
      return;
    }
  }
  StaleTempFiles removed = remove_stale_temp_files(folder);
  if (removed.files > 0) {
    spdlog::warn("{}: removed {} unfinished temporary file(s) of an interrupted earlier run, "
                 "{:.1f} MB freed",
                 folder, removed.files, static_cast<double>(removed.bytes) / 1e6);
  }
}

}  // namespace

StaleTempFiles remove_stale_temp_files(const std::string& folder) {
  StaleTempFiles removed;
  DIR* dir = ::opendir(folder.c_str());
  if (dir == nullptr) {
    return removed;
  }
  while (const dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (!is_temp_name(name)) {
      continue;
    }
    std::string path = folder + "/" + name;
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    struct stat opened {};
    // Held by a live writer: LOCK_NB fails. Free: ours now, and still the
    // file of that name (not replaced meanwhile), so it can go.
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && name_leads_to(path, fd, opened) &&
        S_ISREG(opened.st_mode) && ::unlink(path.c_str()) == 0) {
      ++removed.files;
      removed.bytes += static_cast<uint64_t>(opened.st_size);
    }
    ::close(fd);
  }
  ::closedir(dir);
  return removed;
}

void say_signal_safe(const char* text) noexcept {
  size_t left = std::strlen(text);
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, text, left);
    if (n <= 0) {
      return;
    }
    text += n;
    left -= static_cast<size_t>(n);
  }
}

void remove_live_temp_file() noexcept {
  for (LiveSlot& slot : g_live) {
    if (slot.state.load(std::memory_order_acquire) == k_live) {
      ::unlink(slot.path);
    }
  }
}

namespace {

// Creates and locks a new temporary file of `pattern` (mkstemp's form);
// returns its descriptor and the dup that holds the lock (-1, -1 on error,
// errno set). A sweeper in another process (or thread) may find the file
// between mkstemp and flock and remove it as stale: the lock then fails, or
// the name no longer leads to our file, and we try a new name.
std::pair<int, int> create_locked(const std::string& pattern, std::string& path) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    int fd = ::mkstemp(buffer.data());
    if (fd < 0) {
      return {-1, -1};
    }
    path = buffer.data();
    // The lock lives on a dup so that commit() can close the written
    // descriptor (and see its error) and still hold the lock through the rename.
    int lock_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (lock_fd < 0) {
      int error = errno;
      ::unlink(path.c_str());
      ::close(fd);
      errno = error;
      return {-1, -1};
    }
    struct stat opened {};
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) == 0 && name_leads_to(path, fd, opened)) {
      return {fd, lock_fd};
    }
    ::close(lock_fd);  // a sweeper holds it or removed it: it is the sweeper's now
    ::close(fd);
  }
  errno = EAGAIN;
  return {-1, -1};
}

}  // namespace

TempFile::TempFile(const std::string& destination) : m_destination(destination) {
  std::string folder = folder_of(destination);
  std::tie(m_fd, m_lock_fd) =
      create_locked(folder + "/." + name_of(destination) + ".tmp-XXXXXX", m_path);
  if (m_fd < 0) {
    throw Error(destination + ": cannot create a temporary file in " + folder + ": " +
                std::strerror(errno));
  }
  sweep_folder_once(folder);
  ::fchmod(m_fd, 0644 & ~[] { mode_t mask = ::umask(0); ::umask(mask); return mask; }());
  if (m_path.size() < sizeof LiveSlot::path && m_destination.size() < sizeof LiveSlot::destination) {
    for (LiveSlot& slot : g_live) {
      int expected = k_free;
      if (slot.state.compare_exchange_strong(expected, k_filling, std::memory_order_acquire)) {
        std::memcpy(slot.destination, m_destination.c_str(), m_destination.size() + 1);
        std::memcpy(slot.path, m_path.c_str(), m_path.size() + 1);
        slot.owner.store(this, std::memory_order_relaxed);
        slot.state.store(k_live, std::memory_order_release);
        std::signal(SIGINT, remove_and_reraise);
        std::signal(SIGTERM, remove_and_reraise);
        std::signal(SIGHUP, remove_and_reraise);
        break;
      }
    }
  }
}

TempFile::~TempFile() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
  if (!m_committed) {
    ::unlink(m_path.c_str());
  }
  if (m_lock_fd >= 0) {
    ::close(m_lock_fd);  // unlocks
  }
  release_slot(this);
}

void TempFile::commit() {
  if (::close(m_fd) != 0) {
    m_fd = -1;
    throw Error(m_destination + ": cannot write: " + std::strerror(errno));
  }
  m_fd = -1;
  if (::rename(m_path.c_str(), m_destination.c_str()) != 0) {
    throw Error(m_destination + ": cannot rename the finished output into place: " +
                std::strerror(errno));
  }
  release_slot(this);  // done: a signal from now on has nothing to remove
  m_committed = true;
  ::close(m_lock_fd);
  m_lock_fd = -1;
}

}  // namespace ckpt
