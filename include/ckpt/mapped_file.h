// A read-only memory map of a whole file: tensor bytes are read from the page
// cache in place, never copied into the heap.
#pragma once

#include <string>

#include "ckpt/error.h"
#include "ckpt/bytes.h"

namespace ckpt {

class MappedFile {
public:
  // Maps `path` read-only. Throws `Error` naming the file and the system's
  // reason when it cannot be opened or mapped.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  ByteSpan bytes() const { return {m_data, m_size}; }
  const std::string& path() const { return m_path; }
  // The open descriptor, for copying ranges without mapping them.
  int fd() const { return m_fd; }
  // True when the file is now shorter than when it was mapped: another
  // process truncated it while we read it. (Touching the lost pages raises
  // SIGBUS, which mapped_file.cc turns into the `truncated_while_read` error
  // and exit status 1.)
  bool shrank() const;

private:
  std::string m_path;
  int m_fd = -1;
  const uint8_t* m_data = nullptr;
  uint64_t m_size = 0;
};

// The error for a file that `shrank()`: `<path>: the file was truncated while
// being read (changed by another process?)`.
Error truncated_while_read(const std::string& path);

// Drops the pages of `range` (read-only mapped memory) from this process so
// that streaming through a large mapped file keeps memory use flat; the
// kernel's page cache keeps them, and a later access maps them again.
void release_pages(ByteSpan range);

// Reads `size` bytes at `offset` of `fd` into `to`, through short reads and
// EINTR. Returns how many it read: fewer than `size` when the file ends first
// (errno is then 0) or a read fails (errno says why).
uint64_t read_at(int fd, void* to, uint64_t size, uint64_t offset);

// Copies `size` bytes at `offset` of `source` to the current position of `fd`
// inside the kernel (copy_file_range), through EINTR; through a 1 MiB buffer
// (pread, pwrite) when the two positions lie at different offsets within a
// page, which the kernel copies slower (file_copy.cc); with
// `CopyThreads::two`, from 1 MiB on, in two halves on two threads, which a
// writer asks for when it runs no other thread of its own (file_copy.cc says
// why). Returns how many it copied: fewer when it cannot (another file system,
// a short source, a failed write), and the caller streams the rest; `fd`'s
// position is then after what was copied.
enum class CopyThreads { one, two };
uint64_t copy_at(int source, uint64_t offset, int fd, uint64_t size,
                 CopyThreads threads = CopyThreads::one);

// Writes all `size` bytes at `data` to `fd`, through short writes and EINTR.
// Throws `Error` `<shown_as>: cannot write: <cause>` (a disk full as ENOSPC).
void write_all(int fd, const void* data, uint64_t size, const std::string& shown_as);

// The same at `position` of `fd` (pwrite), leaving its file position alone.
void write_all_at(int fd, const void* data, uint64_t size, uint64_t position,
                  const std::string& shown_as);

}  // namespace ckpt
