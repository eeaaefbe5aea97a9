// The loop every read, write and copy of this tool's files goes through.
#pragma once

#include <sys/types.h>

#include <cerrno>
#include <cstdint>

namespace ckpt {

// Calls `step(done)`, a read, write or copy of up to the `size` - `done`
// bytes left, until all are done, through EINTR; stops at the first that does
// nothing or fails. Returns the bytes done.
template <typename Step>
uint64_t repeat_io(uint64_t size, const Step& step) {
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = step(done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    done += static_cast<uint64_t>(n);
  }
  return done;
}

}  // namespace ckpt
