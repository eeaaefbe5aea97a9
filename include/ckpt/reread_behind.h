// Rereading an output while it is written: verification rereads every byte a
// writer wrote, and doing that after the write leaves the second core idle
// during the write and the first idle during the reread. A RereadBehind
// follows the writer on a second thread instead: each range the writer says
// is final is reread from the file (pread, as verification reads) and its
// CRC-32 noted, a few megabytes behind the writer. Verification still
// rereads the finished file's layout through the reader table; for the bytes
// of a tensor it takes the CRC-32 noted here of exactly the range the layout
// names, and rereads itself whatever was not noted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/mapped_file.h"

namespace ckpt {

class RereadBehind {
public:
  // Ranges below this size are left to verification, which reads them in
  // place: a syscall each would cost more than it saves.
  static constexpr uint64_t k_min_range = uint64_t{64} << 10;

  // Opens `path` (the file being written) for reading, on a thread of its
  // own. Does nothing (every crc32() is nullopt) on a machine with one core
  // or when the file cannot be opened.
  explicit RereadBehind(const std::string& path);
  ~RereadBehind();
  RereadBehind(const RereadBehind&) = delete;
  RereadBehind& operator=(const RereadBehind&) = delete;

  // The writer: bytes [offset, offset + size) of the file are written and
  // will not be written again. Ranges are announced in increasing order.
  void finished(uint64_t offset, uint64_t size);
  // The same from a writer whose position in the file (`fd`) has just come
  // to the range's end, which is checked first: the reread trusts that
  // bytes announced are never written again. A writer elsewhere fails
  // verification (verification_failed, naming `shown_as`).
  void written(int fd, uint64_t offset, uint64_t size, const std::string& shown_as);
  // The writer: no more ranges; the thread ends (and frees its buffer) once
  // it has reread those announced. Does not wait.
  void close();
  // Verification: closes, and waits until every announced range is reread
  // and the thread has ended. Idempotent.
  void wait();
  // After wait(): the CRC-32 of bytes [offset, offset + size) as reread,
  // when announced ranges that were all reread tile it exactly; else
  // nullopt (the caller rereads them).
  std::optional<uint32_t> crc32(uint64_t offset, uint64_t size) const;

private:
  struct Range {
    uint64_t offset;
    uint64_t size;
  };
  struct Sum {
    uint64_t size;
    uint32_t crc32;
  };

  void run();
  std::optional<uint32_t> reread(const Range& range, std::vector<uint8_t>& buffer);

  int m_fd = -1;
  std::mutex m_mutex;
  std::condition_variable m_wake;
  std::deque<Range> m_queue;  // announced, not yet reread
  bool m_last = false;        // closed: no more ranges
  std::atomic<bool> m_stop{false};  // the destructor: stop now
  std::map<uint64_t, Sum> m_sums;  // by offset; written by the thread until joined
  std::thread m_thread;
};

// How many threads a writer's copies may take beside `reread` (null when the
// output is not verified): one while the reread has the second core, since
// three busy threads on two cores were slower (file_copy.cc).
inline CopyThreads copy_threads_beside(const RereadBehind* reread) {
  return reread == nullptr ? CopyThreads::two : CopyThreads::one;
}

}  // namespace ckpt
