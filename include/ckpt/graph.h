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
};

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
  int64_t integer = 0;      // k_int when `big_integer` is empty
  double real = 0;          // k_float
  std::string big_integer;  // k_int past int64: minimal little-endian two's complement
  std::string text;         // k_str (UTF-8), k_bytes/k_bytearray (raw), k_global (module)
  std::string name;         // k_global (qualified name)
  std::vector<Node*> items;                         // list/tuple/set elements; call APPENDs
  std::vector<std::pair<Node*, Node*>> entries;    // dict items; call SETITEMs
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

// Owns every node of one pickle. Addresses are stable: nodes are never moved.
class Graph {
public:
  Graph() = default;
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  Node* make(NodeKind kind) {
    m_nodes.emplace_back();
    m_nodes.back().kind = kind;
    return &m_nodes.back();
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

  size_t node_count() const { return m_nodes.size(); }
  std::deque<Storage>& storages() { return m_storages; }
  const std::deque<Storage>& storages() const { return m_storages; }

  Node* root = nullptr;

private:
  std::deque<Node> m_nodes;
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
void for_each_reachable(const Node* root, const std::function<bool(const Node*)>& visit);

}  // namespace ckpt
