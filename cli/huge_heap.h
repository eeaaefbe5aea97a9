// Process-wide malloc tuning, for the executable alone (a library does not
// tune its host's malloc).
#pragma once

namespace ckpt::cli {

// Asks glibc's malloc to grow its heap in large steps that the kernel may
// back with transparent huge pages. See huge_heap.cc.
void prefer_huge_pages_for_the_heap();

}  // namespace ckpt::cli
