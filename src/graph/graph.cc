// The memory of a Graph (see graph.h): nodes, texts and lists bump-allocated
// in blocks.
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/graph.h"

#if defined(__SANITIZE_ADDRESS__)
#define CKPT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CKPT_ASAN 1
#endif
#endif
#ifdef CKPT_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace ckpt {
namespace {

// A small first block keeps tiny pickles (and the fuzzer) cheap.
constexpr size_t k_first_block = size_t{32} << 10;
// The blocks after it: one transparent huge page each, so that half a
// million nodes cost a few dozen page faults rather than fifteen thousand.
constexpr size_t k_block = size_t{2} << 20;
// Requests past this get memory of their own (a list of 100,000 items).
constexpr size_t k_own_block_above = k_block / 4;
// Blocks kept for reuse: 512 MiB.
constexpr size_t k_cached_blocks = 256;

// Blocks of released graphs, kept for the next graph. A conversion reads
// the input, frees its graph once written, and reads its output back:
// reused, the input's blocks spare that second graph its page faults, which
// on a fresh mapping cost as much as decoding (perf: clear_page at 17% of a
// conversion of 50,000 small tensors).
class BlockCache {
public:
  void* take() {
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(m_mutex);
      if (!m_free.empty()) {
        block = m_free.back();
        m_free.pop_back();
      }
    }
    if (block == nullptr) {
      return map_block();
    }
#ifdef CKPT_ASAN
    ASAN_UNPOISON_MEMORY_REGION(block, k_block);
#endif
    return block;
  }
  void give(void* block) {
#ifdef CKPT_ASAN
    ASAN_POISON_MEMORY_REGION(block, k_block);  // a node used after release_nodes() is caught
#endif
    {
      std::lock_guard<std::mutex> lock(m_mutex);
      if (m_free.size() < k_cached_blocks) {
        m_free.push_back(block);
        return;
      }
    }
#ifdef CKPT_ASAN
    ASAN_UNPOISON_MEMORY_REGION(block, k_block);
#endif
    ::munmap(block, k_block);
  }

private:
  // 2 MiB aligned to 2 MiB, so that the kernel can back it with one huge
  // page: twice that mapped, the unaligned ends unmapped.
  static void* map_block() {
    void* raw = ::mmap(nullptr, 2 * k_block, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    if (raw == MAP_FAILED) {
      throw std::bad_alloc();
    }
    auto address = reinterpret_cast<uintptr_t>(raw);
    uintptr_t start = (address + k_block - 1) & ~(k_block - 1);
    size_t head = start - address;
    if (head > 0) {
      ::munmap(raw, head);
    }
    ::munmap(reinterpret_cast<void*>(start + k_block), k_block - head);
    ::madvise(reinterpret_cast<void*>(start), k_block, MADV_HUGEPAGE);  // a hint: fine if refused
    return reinterpret_cast<void*>(start);
  }

  std::mutex m_mutex;
  std::vector<void*> m_free;
};

BlockCache& block_cache() {
  static auto* cache = new BlockCache;  // never destroyed: graphs may outlive statics
  return *cache;
}

}  // namespace

void* Graph::allocate_in_new_block(size_t bytes, size_t alignment) {
  if (bytes > k_own_block_above) {  // the current block goes on after it
    void* memory = ::operator new(bytes, std::align_val_t(alignment));
    m_blocks.push_back({memory, alignment});
    return memory;
  }
  size_t size = k_block;
  void* memory = nullptr;
  if (m_blocks.empty()) {
    size = k_first_block;
    memory = ::operator new(size, std::align_val_t(alignof(std::max_align_t)));
    m_blocks.push_back({memory, alignof(std::max_align_t)});
  } else {
    memory = block_cache().take();
    m_blocks.push_back({memory, 0});
  }
  m_next = static_cast<char*>(memory);
  m_end = m_next + size;
  return allocate(bytes, alignment);  // fits: bytes <= k_own_block_above < size
}

void Graph::list_too_long() {
  throw FormatError("a list or dict of more than " + std::to_string(UINT32_MAX) + " items");
}

Text Graph::copy_text(std::string_view bytes) {
  if (bytes.empty()) {
    return Text();
  }
  auto* copy = static_cast<char*>(allocate(bytes.size(), 1));
  std::memcpy(copy, bytes.data(), bytes.size());
  return Text(std::string_view(copy, bytes.size()));
}

void Graph::release() {
  release_nodes();
  m_storages.clear();
}

void Graph::release_nodes() {
  for (const Block& block : m_blocks) {  // nodes need no destructor (see graph.h)
    if (block.alignment == 0) {
      block_cache().give(block.memory);
    } else {
      ::operator delete(block.memory, std::align_val_t(block.alignment));
    }
  }
  m_blocks.clear();
  m_next = m_end = nullptr;
  m_count = 0;
  root = nullptr;
  for (Storage& storage : m_storages) {
    storage.type = nullptr;
    storage.location = nullptr;
  }
}

void Graph::take(Graph& other) {
  m_blocks = std::move(other.m_blocks);
  m_next = other.m_next;
  m_end = other.m_end;
  m_count = other.m_count;
  m_storages = std::move(other.m_storages);
  root = other.root;
  other.m_blocks.clear();
  other.m_next = other.m_end = nullptr;
  other.m_count = 0;
  other.m_storages.clear();
  other.root = nullptr;
}

}  // namespace ckpt
