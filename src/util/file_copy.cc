// copy_at (mapped_file.h): tensor bytes from file to file, by whichever of
// three ways the kernel does fastest for the two positions and the size.
//
// Measured over the 1.3 GB bench file, to a position 100 bytes in (positions
// at different offsets within a page) unless said, median of 25 shuffled
// rounds, sync() before each:
//   copy_file_range, aligned                      0.207 s
//   pread + write through one 1 MiB buffer        0.268 s
//   a reader thread ahead of the writer, 4 x 256 KiB  0.222 s
// and copy_file_range misaligned took 0.34 s (0.22 s aligned) in another run.
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "ckpt/mapped_file.h"
#include "util/repeat_io.h"

namespace ckpt {
namespace {

// Writes what it can of `data` to `fd`'s position; returns how much (the
// caller reports the error when it writes the rest itself).
uint64_t write_some(int fd, const uint8_t* data, uint64_t size) {
  return repeat_io(size, [&](uint64_t done) { return ::write(fd, data + done, size - done); });
}

// True when `offset` of the source and `fd`'s position lie at different
// offsets within a page. copy_file_range then writes every source page into
// two destination pages, slower than reading into a buffer and writing it. A
// safetensors file packs its tensors with no gap, so most of its copies are
// such; so are a zip's records, aligned to 64 bytes only.
bool pages_misaligned(uint64_t offset, int fd) {
  static const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  off_t at = ::lseek(fd, 0, SEEK_CUR);
  return at >= 0 && offset % page != static_cast<uint64_t>(at) % page;
}

uint64_t copy_through_buffer(int source, uint64_t offset, int fd, uint64_t size) {
  constexpr uint64_t k_buffer = 1 << 20;
  thread_local std::vector<uint8_t> buffer(k_buffer);
  uint64_t done = 0;
  while (done < size) {
    uint64_t want = std::min<uint64_t>(size - done, k_buffer);
    uint64_t got = read_at(source, buffer.data(), want, offset + done);
    uint64_t put = write_some(fd, buffer.data(), got);
    done += put;
    if (got < want || put < got) {
      break;
    }
  }
  return done;
}

// From this size on a misaligned copy is worth a thread (tens of
// microseconds to start; 4 MiB take about a millisecond to copy).
constexpr uint64_t k_read_ahead_from = uint64_t{4} << 20;

// The same copy with the reads on a second thread: it fills a ring of slots
// (pread) while this thread empties them (write), so the kernel's two copies,
// page cache to slot and slot to page cache, run on two cores. Small slots
// keep the ring in the cores' caches (1 MiB slots measured slower).
class ReadAhead {
public:
  ReadAhead(int source, uint64_t offset, uint64_t size)
      : m_source(source), m_offset(offset), m_size(size), m_ring(ring().data()) {}

  // Returns the bytes written to `fd`, as copy_through_buffer.
  uint64_t copy_to(int fd) {
    std::thread reader([this] { read_all(); });
    uint64_t done = write_all_slots(fd);
    reader.join();
    return done;
  }

private:
  static constexpr uint64_t k_slot = 256 << 10;
  static constexpr uint64_t k_slots = 4;

  uint64_t chunks() const { return (m_size + k_slot - 1) / k_slot; }
  uint64_t wanted(uint64_t chunk) const { return std::min(k_slot, m_size - chunk * k_slot); }
  uint8_t* slot(uint64_t chunk) { return m_ring + chunk % k_slots * k_slot; }

  // The ring belongs to the calling thread (taken in the constructor, not on
  // the reader's) and is reused by its next copy: its pages fault in once.
  static std::vector<uint8_t>& ring() {
    thread_local std::vector<uint8_t> slots(k_slots * k_slot);
    return slots;
  }

  void read_all() {
    for (uint64_t chunk = 0; chunk < chunks(); ++chunk) {
      {
        std::unique_lock<std::mutex> lock(m_mutex);
        m_changed.wait(lock, [&] { return m_stopped || chunk - m_emptied < k_slots; });
        if (m_stopped) {
          break;
        }
      }
      uint64_t got = read_at(m_source, slot(chunk), wanted(chunk), m_offset + chunk * k_slot);
      {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_got[chunk % k_slots] = got;
        m_filled = chunk + 1;
        m_reader_done = got < wanted(chunk) || m_filled == chunks();
      }
      m_changed.notify_all();
      if (got < wanted(chunk)) {
        break;  // the source ended or failed; the caller streams the rest and says why
      }
    }
    std::lock_guard<std::mutex> lock(m_mutex);
    m_reader_done = true;
    m_changed.notify_all();
  }

  uint64_t write_all_slots(int fd) {
    uint64_t done = 0;
    for (uint64_t chunk = 0; chunk < chunks(); ++chunk) {
      uint64_t got = 0;
      {
        std::unique_lock<std::mutex> lock(m_mutex);
        m_changed.wait(lock, [&] { return m_filled > chunk || m_reader_done; });
        if (m_filled <= chunk) {
          break;
        }
        got = m_got[chunk % k_slots];
      }
      uint64_t put = write_some(fd, slot(chunk), got);
      done += put;
      bool short_copy = put < got || got < wanted(chunk);
      {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_emptied = chunk + 1;
        m_stopped = short_copy;
      }
      m_changed.notify_all();
      if (short_copy) {
        break;
      }
    }
    return done;
  }

  const int m_source;
  const uint64_t m_offset;
  const uint64_t m_size;
  uint8_t* const m_ring;
  std::mutex m_mutex;
  std::condition_variable m_changed;
  uint64_t m_got[k_slots] = {};
  uint64_t m_filled = 0;   // chunks read into their slots
  uint64_t m_emptied = 0;  // chunks written out of theirs
  bool m_reader_done = false;
  bool m_stopped = false;  // a write fell short: the reader stops too
};

}  // namespace

uint64_t copy_at(int source, uint64_t offset, int fd, uint64_t size) {
  if (size >= (64 << 10) && pages_misaligned(offset, fd)) {
    if (size >= k_read_ahead_from && std::thread::hardware_concurrency() >= 2) {
      try {
        return ReadAhead(source, offset, size).copy_to(fd);
      } catch (const std::system_error&) {
        // No thread to be had: one buffer does it, slower.
      }
    }
    return copy_through_buffer(source, offset, fd, size);
  }
  auto in = static_cast<off_t>(offset);
  return repeat_io(size, [&](uint64_t done) {
    return ::copy_file_range(source, &in, fd, nullptr, size - done, 0);
  });
}

}  // namespace ckpt
