// Read-only file mapping (see mapped_file.h).
//
// A mapped file that another process truncates while we read it does not
// give a read error: the next touch of a page past its new end raises
// SIGBUS, which would kill the tool with "Bus error" and leave its temporary
// output behind. So every live mapping is recorded in a fixed table, and a
// SIGBUS handler that finds the faulting address in one of them removes the
// temporary output, prints the usual one-line error naming the file, and
// exits with status 1; with write(2), unlink(2) and _exit(2) only, as a signal
// handler must. A SIGBUS anywhere else still kills the process.
#include "ckpt/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/temp_file.h"
#include "util/repeat_io.h"

namespace ckpt {
namespace {

struct LiveMapping {
  std::atomic<uintptr_t> start{0};  // 0: free
  uint64_t size = 0;
  char path[4096] = {0};
};

LiveMapping g_mappings[16];

constexpr char k_truncated[] = "the file was truncated while being read (changed by another process?)";

void on_sigbus(int signal_number, siginfo_t* info, void*) {
  auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  for (LiveMapping& mapping : g_mappings) {
    uintptr_t start = mapping.start.load(std::memory_order_acquire);
    if (start > 1 && address >= start && address - start < mapping.size) {
      remove_live_temp_file();
      say_signal_safe("ckpt-convert: error: ");
      say_signal_safe(mapping.path);
      say_signal_safe(": ");
      say_signal_safe(k_truncated);
      say_signal_safe("\n");
      ::_exit(static_cast<int>(ExitStatus::k_bad_input));
    }
  }
  // Not ours: die of it, as without this handler.
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

// Records a mapping for the handler (installing it the first time); a
// mapping that finds no free slot or too long a path is simply not covered.
void watch(const uint8_t* data, uint64_t size, const std::string& path) {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return ::sigaction(SIGBUS, &action, nullptr) == 0;
  }();
  if (!installed || path.size() >= sizeof LiveMapping::path) {
    return;
  }
  for (LiveMapping& mapping : g_mappings) {
    // Claimed by a compare-and-swap (0 → 1, "being filled"): `batch` maps
    // files on several threads at once.
    uintptr_t free_slot = 0;
    if (mapping.start.compare_exchange_strong(free_slot, 1, std::memory_order_acquire)) {
      std::memcpy(mapping.path, path.c_str(), path.size() + 1);
      mapping.size = size;
      mapping.start.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
      return;
    }
  }
}

void unwatch(const uint8_t* data) {
  for (LiveMapping& mapping : g_mappings) {
    if (mapping.start.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(data)) {
      mapping.start.store(0, std::memory_order_release);
      return;
    }
  }
}

}  // namespace

MappedFile MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(path + ": cannot open: " + std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int saved = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(saved));
  }
  if (S_ISDIR(info.st_mode)) {
    ::close(fd);
    throw Error(path + ": cannot read: is a directory");
  }
  MappedFile file;
  file.m_path = path;
  file.m_size = static_cast<uint64_t>(info.st_size);
  if (file.m_size > 0) {
    void* data = ::mmap(nullptr, file.m_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      int saved = errno;
      ::close(fd);
      throw Error(path + ": cannot map: " + std::strerror(saved));
    }
    file.m_data = static_cast<const uint8_t*>(data);
    watch(file.m_data, file.m_size, path);
  }
  file.m_fd = fd;
  return file;
}

bool MappedFile::shrank() const {
  struct stat info {};
  return m_fd >= 0 && ::fstat(m_fd, &info) == 0 && static_cast<uint64_t>(info.st_size) < m_size;
}

Error truncated_while_read(const std::string& path) {
  return Error(path + ": " + k_truncated);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_fd(std::exchange(other.m_fd, -1)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    this->~MappedFile();
    new (this) MappedFile(std::move(other));
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (m_data != nullptr) {
    unwatch(m_data);
    ::munmap(const_cast<uint8_t*>(m_data), m_size);
  }
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

uint64_t read_at(int fd, void* to, uint64_t size, uint64_t offset) {
  auto* at = static_cast<char*>(to);
  // errno cleared before each read, so that it is 0 where the file ended.
  return repeat_io(size, [&](uint64_t done) {
    errno = 0;
    return ::pread(fd, at + done, size - done, static_cast<off_t>(offset + done));
  });
}

void write_all(int fd, const void* data, uint64_t size, const std::string& shown_as) {
  const auto* at = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, at, std::min<uint64_t>(size, 1 << 30));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error(shown_as + ": cannot write: " + std::strerror(n < 0 ? errno : ENOSPC));
    }
    at += n;
    size -= static_cast<uint64_t>(n);
  }
}

void write_all_at(int fd, const void* data, uint64_t size, uint64_t position,
                  const std::string& shown_as) {
  const auto* at = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, at, std::min<uint64_t>(size, 1 << 30), static_cast<off_t>(position));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error(shown_as + ": cannot write: " + std::strerror(n < 0 ? errno : ENOSPC));
    }
    at += n;
    position += static_cast<uint64_t>(n);
    size -= static_cast<uint64_t>(n);
  }
}

void release_pages(ByteSpan range) {
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto start = reinterpret_cast<uintptr_t>(range.data);
  uintptr_t first = (start + page - 1) & ~(page - 1);  // whole pages inside the range only
  uintptr_t last = (start + range.size) & ~(page - 1);
  if (last > first) {
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
}

}  // namespace ckpt
