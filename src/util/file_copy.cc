// copy_at (mapped_file.h): tensor bytes from file to file, by whichever of
// two ways the kernel does fastest for the two positions and the size.
//
// Measured over the 1.3 GB bench file, to a position 100 bytes in (positions
// at different offsets within a page), copy_file_range took 0.34 s against
// 0.22 s aligned; pread + write through one 1 MiB buffer 0.25 s.
//
// A reader thread ahead of the writer (a ring of 4 x 256 KiB slots) was tried
// (86f409c) and taken out again: 0.268 -> 0.222 s on one machine, but on
// another (2 vCPUs that share no cache, it seems) it was the slower and the
// less steady: 31 shuffled rounds side by side, the 1.3 GB DDP file to
// .safetensors 0.529 s with one buffer, 0.677 s with the thread (fastest
// 0.475 and 0.437), to .pth 0.469 and 0.587 s, and system time 0.5 -> 0.8 s:
// likely the slots' bytes crossing between the cores' caches.
// One buffer cost a fifth more on the first machine; the thread a third more
// on the second, so the simpler way stays.
// Smaller buffers were slower there: 128 KiB 0.54 s, 256 KiB 0.48, 1 MiB 0.41.
//
// Two threads that each copy one half of a range through a buffer of their
// own (pread, pwrite) share no bytes, and do pay on that second machine: the
// 1.3 GB file to .safetensors --no-verify 0.51-0.59 s -> 0.41-0.45 s, to .pth
// 0.45-0.54 -> 0.38-0.48 s (6 rounds each, alternating; system time 0.55 ->
// 0.72 s). With the reread behind the writer running too (a verified write),
// three threads on two cores made it slower (0.66 -> 0.73 s in a C harness),
// so writers ask for two halves only when they have no reread (CopyThreads).
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ckpt/mapped_file.h"
#include "util/repeat_io.h"
#include "util/two_halves.h"

namespace ckpt {
namespace {

// True when `offset` of the source and `position` of the destination lie at
// different offsets within a page. copy_file_range then writes every source
// page into two destination pages, slower than reading into a buffer and
// writing it. A safetensors file packs its tensors with no gap, so most of
// its copies are such; so are a zip's records, aligned to 64 bytes only.
bool pages_misaligned(uint64_t offset, uint64_t position) {
  static const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return offset % page != position % page;
}

// Copies bytes [begin, end) of a range that starts at `offset` of `source`
// and goes to `position` of `fd` (pwrite, so that two threads can share
// `fd`). Returns how many were copied from `begin` on.
uint64_t copy_part(int source, uint64_t offset, int fd, uint64_t position, uint64_t begin,
                   uint64_t end) {
  constexpr uint64_t k_buffer = 1 << 20;
  thread_local std::vector<uint8_t> buffer(k_buffer);
  uint64_t done = begin;
  while (done < end) {
    uint64_t want = std::min<uint64_t>(end - done, k_buffer);
    uint64_t got = read_at(source, buffer.data(), want, offset + done);
    uint64_t put = repeat_io(got, [&](uint64_t at) {
      return ::pwrite(fd, buffer.data() + at, got - at, static_cast<off_t>(position + done + at));
    });
    done += put;
    if (got < want || put < got) {
      break;
    }
  }
  return done - begin;
}

// Through a 1 MiB buffer to `position`, `fd`'s position, from 1 MiB on in
// two halves on two threads when `threads` allows. Leaves `fd`'s position
// after what it copied.
uint64_t copy_through_buffer(int source, uint64_t offset, int fd, uint64_t position,
                             uint64_t size, CopyThreads threads) {
  uint64_t copied[2] = {0, 0};
  uint64_t half = size;
  auto copy = [&](uint64_t begin, uint64_t end) {
    copied[begin == 0 ? 0 : 1] = copy_part(source, offset, fd, position, begin, end);
  };
  if (threads == CopyThreads::two) {
    half = in_two_halves(size, copy);
  } else {
    copy(0, size);
  }
  // What the caller may take as done: the copied prefix of the range.
  uint64_t done = copied[0] == half ? half + copied[1] : copied[0];
  ::lseek(fd, static_cast<off_t>(position + done), SEEK_SET);
  return done;
}

}  // namespace

uint64_t copy_at(int source, uint64_t offset, int fd, uint64_t size, CopyThreads threads) {
  if (size >= (64 << 10)) {
    off_t at = ::lseek(fd, 0, SEEK_CUR);  // none for a pipe: the kernel copies
    if (at >= 0 && pages_misaligned(offset, static_cast<uint64_t>(at))) {
      return copy_through_buffer(source, offset, fd, static_cast<uint64_t>(at), size, threads);
    }
  }
  auto in = static_cast<off_t>(offset);
  return repeat_io(size, [&](uint64_t done) {
    return ::copy_file_range(source, &in, fd, nullptr, size - done, 0);
  });
}

}  // namespace ckpt
