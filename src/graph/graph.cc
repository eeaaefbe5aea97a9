// The node arena of a Graph (see graph.h).
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "ckpt/graph.h"

#include "ckpt/error.h"

namespace ckpt {
namespace {

// A small first block keeps tiny pickles (and the fuzzer) cheap; the blocks
// after it are one transparent huge page each, so that a million nodes cost
// a hundred page faults instead of fifty thousand.
constexpr size_t k_first_block_nodes = 256;
constexpr size_t k_huge_page = size_t{2} << 20;

// Memory of 2 MiB and more as transparent huge pages, the rest from
// operator new: what the arena of the nodes' lists grows into.
class HugePageResource : public std::pmr::memory_resource {
  void* do_allocate(size_t bytes, size_t alignment) override {
    if (bytes < k_huge_page) {
      return ::operator new(bytes, std::align_val_t(alignment));
    }
    size_t rounded = (bytes + k_huge_page - 1) / k_huge_page * k_huge_page;
    void* memory = std::aligned_alloc(k_huge_page, rounded);
    if (memory == nullptr) {
      throw std::bad_alloc();
    }
    ::madvise(memory, rounded, MADV_HUGEPAGE);  // a hint: fine if refused
    return memory;
  }
  void do_deallocate(void* memory, size_t bytes, size_t alignment) override {
    if (bytes < k_huge_page) {
      ::operator delete(memory, std::align_val_t(alignment));
    } else {
      std::free(memory);
    }
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }
};

std::pmr::memory_resource* huge_pages() {
  static HugePageResource resource;
  return &resource;
}

}  // namespace

void Graph::add_block() {
  Block block;
  if (m_blocks.empty()) {
    m_arena = std::make_unique<std::pmr::monotonic_buffer_resource>(k_first_block_nodes * 64,
                                                                    huge_pages());
    block.capacity = k_first_block_nodes;
    block.nodes = static_cast<Node*>(::operator new(block.capacity * sizeof(Node)));
  } else {
    void* memory = std::aligned_alloc(k_huge_page, k_huge_page);
    if (memory == nullptr) {
      throw std::bad_alloc();
    }
    ::madvise(memory, k_huge_page, MADV_HUGEPAGE);  // a hint: fine if refused
    block.capacity = k_huge_page / sizeof(Node);
    block.nodes = static_cast<Node*>(memory);
    block.huge = true;
  }
  m_blocks.reserve(m_blocks.size() + 1);
  m_blocks.push_back(block);
  m_used = 0;
  m_capacity = block.capacity;
}

void* Graph::arena_allocate(size_t bytes, size_t alignment) {
  if (m_arena == nullptr) {
    add_block();  // makes the arena
  }
  return m_arena->allocate(bytes, alignment);
}

void Graph::list_too_long() {
  throw FormatError("a list or dict of more than " + std::to_string(UINT32_MAX) + " items");
}

Text Graph::copy_text(std::string_view bytes) {
  if (bytes.empty()) {
    return Text();
  }
  auto* copy = static_cast<char*>(arena_allocate(bytes.size(), 1));
  std::memcpy(copy, bytes.data(), bytes.size());
  return Text(std::string_view(copy, bytes.size()));
}

void Graph::release() {
  release_nodes();
  m_storages.clear();
}

void Graph::release_nodes() {
  for (Block& block : m_blocks) {  // nodes need no destructor (see graph.h)
    if (block.huge) {
      std::free(block.nodes);
    } else {
      ::operator delete(block.nodes);
    }
  }
  m_blocks.clear();
  m_arena.reset();
  m_used = m_capacity = m_count = 0;
  root = nullptr;
  for (Storage& storage : m_storages) {
    storage.type = nullptr;
    storage.location = nullptr;
  }
}

void Graph::take(Graph& other) {
  m_blocks = std::move(other.m_blocks);
  m_arena = std::move(other.m_arena);
  m_used = other.m_used;
  m_capacity = other.m_capacity;
  m_count = other.m_count;
  m_storages = std::move(other.m_storages);
  root = other.root;
  other.m_blocks.clear();
  other.m_used = other.m_capacity = other.m_count = 0;
  other.m_storages.clear();
  other.root = nullptr;
}

}  // namespace ckpt
