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

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/dtype.h"

namespace ckpt {

class MappedFile;
struct Node;

// A string a node holds: a str's UTF-8, a bytes' raw bytes, a global's
// module or name, an int past int64's two's complement. It views bytes that
// live as long as the graph (its arena, or a string literal): as a
// std::string, each of a state dict's keys cost a malloc and a free, and 32
// bytes in every node. Compares like a std::string_view.
class Text {
public:
  constexpr Text() = default;
  // `bytes` must outlive every use: the graph's arena, or a literal.
  explicit constexpr Text(std::string_view bytes) : m_data(bytes.data()), m_size(bytes.size()) {}

  std::string_view view() const { return {m_data, m_size}; }
  operator std::string_view() const { return view(); }  // NOLINT: a view converts freely
  std::string str() const { return std::string(m_data, m_size); }
  const char* data() const { return m_data; }
  size_t size() const { return m_size; }
  bool empty() const { return m_size == 0; }
  char operator[](size_t i) const { return m_data[i]; }
  const char* begin() const { return m_data; }
  const char* end() const { return m_data + m_size; }

  friend bool operator==(Text a, Text b) { return a.view() == b.view(); }
  friend bool operator==(Text a, std::string_view b) { return a.view() == b; }
  friend bool operator==(std::string_view a, Text b) { return a == b.view(); }
  friend bool operator!=(Text a, Text b) { return !(a == b); }
  friend bool operator!=(Text a, std::string_view b) { return !(a == b); }
  friend bool operator!=(std::string_view a, Text b) { return !(a == b); }
  friend std::string operator+(std::string a, Text b) { return a.append(b.m_data, b.m_size); }
  friend std::string operator+(Text a, std::string_view b) { return a.str().append(b); }
  friend std::string operator+(const char* a, Text b) { return std::string(a) + b; }

private:
  const char* m_data = "";
  size_t m_size = 0;
};

// One run of a storage's bytes: `size` bytes at `file_offset` of `file`.
struct BytePiece {
  const MappedFile* file = nullptr;
  uint64_t file_offset = 0;
  uint64_t size = 0;
};

// A storage record of the checkpoint: `('storage', type, key, location, numel)`.
struct Storage {
  std::string key;           // record key in the input (`data/<key>`)
  Node* type = nullptr;      // k_global: `torch.FloatStorage`, `torch.UntypedStorage`, …
  Node* location = nullptr;  // k_str: `cpu`, `cuda:3`, …
  Dtype dtype = Dtype::k_untyped;
  int64_t numel = 0;         // elements of `dtype`
  ByteSpan bytes;            // numel × element_size(dtype) bytes (read through storage_bytes)
  const MappedFile* file = nullptr;  // the file `bytes` lie in; nullptr: only in memory
  uint64_t file_offset = 0;  // where `bytes` start in `file`
  bool has_crc32 = false;    // `crc32` is the zip record's, which holds exactly `bytes`
  uint32_t crc32 = 0;
  // A storage made of runs of several files (a parameter consolidated from
  // DeepSpeed ranks, a tensor assembled from DCP chunks): its bytes, in order.
  // Then `bytes.data` and `file` are null and `bytes.size` is their total;
  // read them with `read_storage_range` (storage_pieces.h). Empty for a
  // storage that is one range (`bytes`).
  std::vector<BytePiece> pieces;
  mutable uint32_t memo_epoch = 0;  // encoder scratch: its key string is memoized
  mutable uint32_t memo_index = 0;
};

// Where the bytes of a storage are: in memory, and in which file at which
// offset when they lie in one.
struct StorageBytes {
  ByteSpan bytes;
  const MappedFile* file = nullptr;  // nullptr: only in memory
  uint64_t file_offset = 0;          // where `bytes` start in `file`
};

// Where the bytes of `storage` are, when they are one range (no `pieces`).
// Every reader of a storage's contents (the writer, verification, check's
// CRC-32 and NaN/Inf scans, the LibTorch loader) asks here, or reads a
// storage of pieces through `read_storage_range`.
inline StorageBytes storage_bytes(const Storage& storage) {
  return {storage.bytes, storage.file, storage.file_offset};
}

// A node's list (its items or its entries) in memory of the node's graph.
// It reads like a std::vector; it changes only through `Graph::assign` and
// `Graph::append`, which take the memory from the graph's arena. 16 bytes,
// where a std::pmr::vector is 32.
template <typename T>
class ArenaList {
public:
  size_t size() const { return m_size; }
  bool empty() const { return m_size == 0; }
  const T* data() const { return m_data; }
  const T* begin() const { return m_data; }
  const T* end() const { return m_data + m_size; }
  std::reverse_iterator<const T*> rbegin() const { return std::reverse_iterator<const T*>(end()); }
  std::reverse_iterator<const T*> rend() const { return std::reverse_iterator<const T*>(begin()); }
  const T& operator[](size_t i) const { return m_data[i]; }
  T& operator[](size_t i) { return m_data[i]; }

private:
  friend class Graph;
  T* m_data = nullptr;
  uint32_t m_size = 0;
  uint32_t m_capacity = 0;
};

// A dict item: key and value (a pair that copies as plain bytes).
struct NodeEntry {
  Node* first = nullptr;
  Node* second = nullptr;
};

using NodeList = ArenaList<Node*>;
using NodeEntries = ArenaList<NodeEntry>;

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
  Text text;
  Text name;  // k_global (qualified name)
  // In the graph's arena: a state dict's graph holds hundreds of thousands
  // of short lists, which malloc and free one by one cost most of the time
  // of reading it.
  NodeList items;       // list/tuple/set elements; call APPENDs
  NodeEntries entries;  // dict items; call SETITEMs
  Node* callable = nullptr;  // k_call; for k_dict, the OrderedDict class or null for dict
  Node* args = nullptr;      // k_call: a k_tuple
  Node* kwargs = nullptr;    // k_call made by NEWOBJ_EX: a k_dict
  Node* state = nullptr;     // k_dict/k_call: the BUILD state, or null without BUILD
  Storage* storage = nullptr;  // k_storage

  bool is_global(const char* module, const char* qualified_name) const {
    return kind == NodeKind::k_global && text == module && name == qualified_name;
  }
  bool is_str() const { return kind == NodeKind::k_str; }
};

// A node owns nothing (its texts and lists are in the graph's arena), so a
// graph frees its blocks without visiting a node; and it is 128 bytes, where
// a std::string and a std::pmr::vector each made it 192.
static_assert(std::is_trivially_destructible_v<Node>);

// Owns every node of one pickle. Addresses are stable: nodes live in blocks
// and never move. Nodes, texts and lists are bump-allocated in the graph's
// blocks: a state dict of 50,000 tensors has half a million nodes, and one
// allocation each was most of the time spent reading it. Blocks after the
// first are 2 MiB, each a transparent huge page, reused from one graph to the
// next (see graph.cc).
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
    Node* node = new (allocate(sizeof(Node), alignof(Node))) Node();
    node->kind = kind;
    ++m_count;
    return node;
  }
  // `bytes` copied into the graph's arena, where they live as long as it.
  Text copy_text(std::string_view bytes);

  // Sets `list` (of a node of this graph) to `count` values, or appends them.
  template <typename T>
  void assign(ArenaList<T>& list, const T* values, size_t count) {
    list.m_size = 0;
    append(list, values, count);
  }
  template <typename T>
  void append(ArenaList<T>& list, const T* values, size_t count) {
    if (count > list.m_capacity - list.m_size) {
      grow(list, count);
    }
    std::copy(values, values + count, list.m_data + list.m_size);
    list.m_size += static_cast<uint32_t>(count);
  }
  template <typename T>
  void push_back(ArenaList<T>& list, const T& value) {
    append(list, &value, 1);
  }
  Node* make_str(std::string_view text) {
    Node* node = make(NodeKind::k_str);
    node->text = copy_text(text);
    return node;
  }
  Node* make_int(int64_t value) {
    Node* node = make(NodeKind::k_int);
    node->integer = value;
    return node;
  }
  Node* make_global(std::string_view module, std::string_view name) {
    Node* node = make(NodeKind::k_global);
    node->text = copy_text(module);
    node->name = copy_text(name);
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
  struct Block {
    void* memory = nullptr;
    size_t alignment = 0;  // 0: a cached 2 MiB block, else from operator new
  };
  // `bytes` from the last block, or a new one.
  void* allocate(size_t bytes, size_t alignment) {
    uintptr_t start = (reinterpret_cast<uintptr_t>(m_next) + alignment - 1) & ~(alignment - 1);
    if (start > reinterpret_cast<uintptr_t>(m_end) ||
        bytes > reinterpret_cast<uintptr_t>(m_end) - start) {
      return allocate_in_new_block(bytes, alignment);
    }
    m_next = reinterpret_cast<char*>(start + bytes);
    return reinterpret_cast<void*>(start);
  }
  void* allocate_in_new_block(size_t bytes, size_t alignment);
  void release();                // release_nodes() and the storages
  [[noreturn]] static void list_too_long();
  // Room in `list` for `more` values: room for the old ones and the new,
  // doubled; the old memory stays in the arena, as a vector's growth leaves.
  template <typename T>
  void grow(ArenaList<T>& list, size_t more) {
    static_assert(std::is_trivially_copyable_v<T>);
    uint64_t needed = uint64_t{list.m_size} + more;
    if (needed > UINT32_MAX) {
      list_too_long();
    }
    uint64_t doubled = 2 * uint64_t{list.m_capacity};
    uint64_t capacity = std::min<uint64_t>(UINT32_MAX, std::max(needed, doubled));
    auto* data = static_cast<T*>(allocate(capacity * sizeof(T), alignof(T)));
    std::copy(list.m_data, list.m_data + list.m_size, data);
    list.m_data = data;
    list.m_capacity = static_cast<uint32_t>(capacity);
  }
  void take(Graph& other);       // moves everything out of `other`

  std::vector<Block> m_blocks;
  char* m_next = nullptr;  // free memory of the last block
  char* m_end = nullptr;
  size_t m_count = 0;
  std::deque<Storage> m_storages;
};

// `module.name` of a k_global node.
inline std::string qualified_name(const Node& global) {
  return global.text + "." + global.name;
}

// The value under the str key `key` among the entries of `dict` (a dict, or
// a call's SETITEMs), or null.
inline Node* dict_get(const Node* dict, std::string_view key) {
  for (const auto& [k, v] : dict->entries) {
    if (k->is_str() && k->text == key) {
      return v;
    }
  }
  return nullptr;
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
