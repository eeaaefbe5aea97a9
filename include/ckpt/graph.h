// The object graph: what a checkpoint's pickle describes, with nothing run.
//
// The pickle decoder turns every opcode into inert nodes: a GLOBAL is a name,
// REDUCE/NEWOBJ/BUILD make `k_call` nodes that remember the callable, its
// arguments, the items appended and the BUILD state. Shared references (the
// pickle memo) stay shared: two places that held one Python object hold one
// `Node*`. A persistent id `('storage', …)` becomes a `k_storage` node that
// points at the storage's bytes in the mapped input file.
//
// All nodes are owned by their `Graph` and never freed one by one, so cycles
// and million-deep chains cost no recursion on destruction.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/dtype.h"

namespace ckpt {

struct Node;

// A view of bytes that live elsewhere (normally the mapped input file).
struct ByteSpan {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// A storage record of the checkpoint: `('storage', type, key, location, numel)`.
struct Storage {
  std::string key;           // record key in the input (`data/<key>`)
  Node* type = nullptr;      // k_global: `torch.FloatStorage`, `torch.UntypedStorage`, …
  Node* location = nullptr;  // k_str: `cpu`, `cuda:3`, …
  Dtype dtype = Dtype::k_untyped;
  int64_t numel = 0;         // elements of `dtype`
  ByteSpan bytes;            // numel × element_size(dtype) bytes
  uint64_t file_offset = 0;  // where `bytes` start in the file
  bool has_crc32 = false;    // `crc32` is the zip record's, which holds exactly `bytes`
  uint32_t crc32 = 0;
  mutable uint32_t memo_epoch = 0;  // encoder scratch: its key string is memoized
  mutable uint32_t memo_index = 0;
};

using NodeList = std::pmr::vector<Node*>;
using NodeEntries = std::pmr::vector<std::pair<Node*, Node*>>;

enum class NodeKind : uint8_t {
  k_none, k_bool, k_int, k_float, k_str, k_bytes, k_bytearray,
  k_list, k_tuple, k_dict, k_set, k_frozenset,
  k_global,   // a name: `module` in text, qualified name in name
  k_call,     // callable(*args) [+ appended items, set items, BUILD state]
  k_storage,  // a persistent storage reference
};

// How a `k_call` was made, so it is written back the same way.
enum class CallStyle : uint8_t { k_reduce, k_newobj };

struct Node {
  NodeKind kind = NodeKind::k_none;
  CallStyle style = CallStyle::k_reduce;
  bool boolean = false;
  // Scratch for one traversal or one encoding at a time (an epoch number
  // marks a node as seen without a hash set); see walk.cc and encoder.cc.
  mutable uint32_t visit_epoch = 0;
  mutable uint32_t memo_epoch = 0;
  mutable uint32_t memo_index = 0;
  union {
    int64_t integer = 0;  // k_int when `text` is empty
    double real;          // k_float
  };
  // k_str (UTF-8), k_bytes/k_bytearray (raw), k_global (module), and a k_int
  // past int64 (minimal little-endian two's complement).
  std::string text;
  std::string name;         // k_global (qualified name)
  // Allocated from the graph's arena: a state dict's graph holds hundreds of
  // thousands of short lists, which malloc and free one by one cost most of
  // the time of reading it.
  NodeList items;       // list/tuple/set elements; call APPENDs
  NodeEntries entries;  // dict items; call SETITEMs
  Node* callable = nullptr;  // k_call; for k_dict, the OrderedDict class or null for dict
  Node* args = nullptr;      // k_call: a k_tuple
  Node* kwargs = nullptr;    // k_call made by NEWOBJ_EX: a k_dict
  Node* state = nullptr;     // k_dict/k_call: the BUILD state, or null without BUILD
  Storage* storage = nullptr;  // k_storage

  Node() = default;
  explicit Node(std::pmr::memory_resource* arena) : items(arena), entries(arena) {}

  bool is_global(const char* module, const char* qualified_name) const {
    return kind == NodeKind::k_global && text == module && name == qualified_name;
  }
  bool is_str() const { return kind == NodeKind::k_str; }
};

// Owns every node of one pickle. Addresses are stable: nodes live in blocks
// and never move. A state dict of 50,000 tensors has a million nodes: one
// allocation each was most of the time spent reading it, and so were the page
// faults of 4 KiB pages, so blocks after the first are 2 MiB transparent huge
// pages and nodes are constructed only when made.
class Graph {
public:
  Graph() = default;
  Graph(Graph&& other) noexcept { take(other); }
  Graph& operator=(Graph&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() { release(); }

  Node* make(NodeKind kind) {
    if (m_used == m_capacity) {
      add_block();
    }
    Node* node = new (&m_blocks.back().nodes[m_used++]) Node(m_arena.get());  // made when needed
    node->kind = kind;
    ++m_count;
    return node;
  }
  Node* make_str(std::string text) {
    Node* node = make(NodeKind::k_str);
    node->text = std::move(text);
    return node;
  }
  Node* make_int(int64_t value) {
    Node* node = make(NodeKind::k_int);
    node->integer = value;
    return node;
  }
  Node* make_global(std::string module, std::string name) {
    Node* node = make(NodeKind::k_global);
    node->text = std::move(module);
    node->name = std::move(name);
    return node;
  }
  Storage* make_storage() {
    m_storages.emplace_back();
    return &m_storages.back();
  }

  // Frees every node but keeps the storages, for a caller done with the
  // objects but not with the storages' bytes. Every Node* into the graph
  // dangles after it; `root` and the storages' `type` and `location` are null.
  void release_nodes();

  size_t node_count() const { return m_count; }
  std::deque<Storage>& storages() { return m_storages; }
  const std::deque<Storage>& storages() const { return m_storages; }

  Node* root = nullptr;

private:
  // Raw memory for `capacity` nodes, of which the graph constructed the first
  // `m_used` of the last block and all of the others.
  struct Block {
    Node* nodes = nullptr;
    size_t capacity = 0;
    bool huge = false;  // from aligned_alloc, else operator new
  };
  void add_block();
  void release();                // release_nodes() and the storages
  void take(Graph& other);       // moves everything out of `other`

  std::vector<Block> m_blocks;
  std::unique_ptr<std::pmr::monotonic_buffer_resource> m_arena;  // the nodes' lists
  size_t m_used = 0;
  size_t m_capacity = 0;
  size_t m_count = 0;
  std::deque<Storage> m_storages;
};

// `module.name` of a k_global node.
inline std::string qualified_name(const Node& global) {
  return global.text + "." + global.name;
}

}  // namespace ckpt

namespace ckpt {

// Calls `visit(node)` once for every node reachable from `root`, depth-first in
// the order a pickle writes them (callable, args, items, entries, state).
// `visit` returns false to skip the node's children. Iterative: any depth.
// Not reentrant for one graph: `visit` must not start another traversal.
void for_each_reachable(const Node* root, const std::function<bool(const Node*)>& visit);

// A fresh number for marking nodes in one traversal (`visit_epoch`,
// `memo_epoch`), unique across threads.
uint32_t next_epoch();

}  // namespace ckpt
