// The node arena of a Graph (see graph.h).
#include <sys/mman.h>

#include <cstdlib>
#include <memory>

#include "ckpt/graph.h"

namespace ckpt {
namespace {

// A small first block keeps tiny pickles (and the fuzzer) cheap; the blocks
// after it are one transparent huge page each, so that a million nodes cost
// a hundred page faults instead of fifty thousand.
constexpr size_t k_first_block_nodes = 256;
constexpr size_t k_huge_page = size_t{2} << 20;

}  // namespace

void Graph::add_block() {
  Block block;
  if (m_blocks.empty()) {
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

void Graph::release() {
  for (size_t i = 0; i < m_blocks.size(); ++i) {
    Block& block = m_blocks[i];
    std::destroy_n(block.nodes, i + 1 == m_blocks.size() ? m_used : block.capacity);
    if (block.huge) {
      std::free(block.nodes);
    } else {
      ::operator delete(block.nodes);
    }
  }
  m_blocks.clear();
  m_used = m_capacity = m_count = 0;
  m_storages.clear();
  root = nullptr;
}

void Graph::take(Graph& other) {
  m_blocks = std::move(other.m_blocks);
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
