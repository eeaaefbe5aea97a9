// One thread kept for the second half of every split scan (two_halves.h).
//
// A writer splits each tensor of 1 MiB or more in two halves, one per core:
// hundreds of splits per checkpoint. A new thread for each cost more than
// the split saved: it maps a stack, and its 1 MiB copy buffer (file_copy.cc)
// is fresh memory the kernel faults in and zeroes. Over the 1.3 GB bench
// file's 140 such tensors (a copy harness, 15 rounds side by side), a thread
// per tensor took 0.24 s, as long as one thread alone; a kept thread 0.19 s,
// and `cp` 0.22 s.
#pragma once

#include <functional>

namespace ckpt {

// Runs `there` on the process's helper thread (started on the first call and
// kept) and `here` on the calling thread, and returns once both are done.
// When the helper is busy with another caller's half (batch jobs, or a call
// from inside `there`), `there` gets a thread of its own, so calls never wait
// for each other. Neither function may throw.
void run_beside(const std::function<void()>& there, const std::function<void()>& here);

}  // namespace ckpt
