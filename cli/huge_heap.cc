// Reading a state dict of 50,000 small tensors touches ~150 MB of freshly
// allocated memory: nodes (already in huge-page blocks, see graph.cc) but
// also tensor lists, key strings, the report, the encoded pickle. With 4 KiB
// pages that is ~15,000 page faults, and on a VM a fault costs ~15 µs: 40%
// of the conversion. Transparent huge pages are mostly "madvise" only, and
// glibc asks for them only when told at startup (GLIBC_TUNABLES, from 2.35).
// So: the heap grows by 512 MiB of address space at a time (memory is
// committed only as it is touched), big blocks come from the heap rather
// than their own mappings, and that region is marked for huge pages. Growth
// past it falls back to ordinary pages; nothing here can fail a conversion.
#include "huge_heap.h"

#include <cstdint>
#include <cstdlib>  // defines __GLIBC__ when the C library is glibc

// Sanitizers bring their own malloc (GCC says so with __SANITIZE_*__, clang
// with __has_feature; some of their mallopt() succeed without doing anything).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CKPT_OWN_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define CKPT_OWN_MALLOC 1
#endif
#endif

#if defined(__GLIBC__) && !defined(CKPT_OWN_MALLOC)
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
#define CKPT_HUGE_HEAP 1
#endif

namespace ckpt::cli {

void prefer_huge_pages_for_the_heap() {
#ifdef CKPT_HUGE_HEAP
  constexpr size_t k_heap_step = size_t{512} << 20;
  constexpr size_t k_mmap_threshold = size_t{32} << 20;  // glibc's largest
  if (mallopt(M_TOP_PAD, k_heap_step) == 0 || mallopt(M_MMAP_THRESHOLD, k_mmap_threshold) == 0 ||
      mallopt(M_TRIM_THRESHOLD, 2 * k_heap_step) == 0) {
    return;
  }
  // A block the heap cannot hold yet makes it grow by the step; the region
  // from that block to the new end of the heap is then marked.
  void* probe = std::malloc(size_t{1} << 20);
  auto start = (reinterpret_cast<uintptr_t>(probe) + 4095) & ~uintptr_t{4095};
  auto end = reinterpret_cast<uintptr_t>(sbrk(0));
  if (probe != nullptr && start < end && end - start <= 2 * k_heap_step) {  // on the brk heap
    madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);  // a hint: fine if refused
  }
  std::free(probe);
#endif
}

}  // namespace ckpt::cli
