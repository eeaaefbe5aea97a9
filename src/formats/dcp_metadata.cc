// Decoding a DCP `.metadata` pickle (dcp_metadata.h) without running it.
//
// The facts (docs/dcp.md, from torch's metadata.py and filesystem.py): each
// dataclass is `NEWOBJ(cls, ())` + `BUILD(state)` with its `__dict__` as
// state, save TensorProperties, whose `__getstate__` gives a 5-tuple. The
// classes live in `torch.distributed._shard.checkpoint.*` in torch 1.13 and in
// `torch.distributed.checkpoint.*` from 2.0 (PR #88698, which also aliases the
// old path); TensorProperties moved from
// `torch.distributed._shard.sharded_tensor.metadata` into DCP's metadata
// module in 2.3 (PR #116248), its memory-format enum renamed
// `_MEM_FORMAT_ENCODING` on the way (both names accepted, the shipped one is
// unconfirmed). An enum member is pickled by value, or on Python
// 3.11.0-3.11.3 by name through `builtins.getattr`. `_StorageInfo` gains
// `transform_descriptors` in ≈2.7 (PR #143359), absent unless set.
// `planner_data` is None in 1.13 and maps each flattened key to its path from
// 2.0 on.
#include "ckpt/dcp_metadata.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/pickle.h"

namespace ckpt {
namespace {

constexpr const char* k_old = "torch.distributed._shard.checkpoint";       // torch 1.13
constexpr const char* k_new = "torch.distributed.checkpoint";              // torch >= 2.0
constexpr const char* k_shard_tp = "torch.distributed._shard.sharded_tensor.metadata";

// What a refused value is, for messages.
std::string kind_text(const Node* node) {
  switch (node->kind) {
    case NodeKind::k_none: return "None";
    case NodeKind::k_bool: return "a bool";
    case NodeKind::k_int: return "an int";
    case NodeKind::k_float: return "a float";
    case NodeKind::k_str: return "a str";
    case NodeKind::k_bytes: return "bytes";
    case NodeKind::k_bytearray: return "a bytearray";
    case NodeKind::k_list: return "a list";
    case NodeKind::k_tuple: return "a tuple";
    case NodeKind::k_dict: return "a dict";
    case NodeKind::k_set: return "a set";
    case NodeKind::k_frozenset: return "a frozenset";
    case NodeKind::k_global: return "the global " + qualified_name(*node);
    case NodeKind::k_call:
      return node->callable != nullptr && node->callable->kind == NodeKind::k_global
                 ? "a " + qualified_name(*node->callable) + " object"
                 : "an object";
    case NodeKind::k_storage: return "a storage";
  }
  return "a value";
}

std::string dims_text(const Dims& dims) {
  std::string out = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(dims[i]);
  }
  return out + (dims.size() == 1 ? ",)" : ")");
}

// The globals a `.metadata` may name, by qualified name.
bool is_dcp_class(const std::string& module, const std::string& name) {
  static const std::set<std::string> metadata_classes = {
      "Metadata", "TensorStorageMetadata", "ChunkStorageMetadata", "BytesStorageMetadata",
      "MetadataIndex", "StorageMeta", "TensorProperties", "_MEM_FORMAT_ENCODING",
      "MEM_FORMAT_ENCODING"};
  if (module == std::string(k_old) + ".metadata" || module == std::string(k_new) + ".metadata") {
    return metadata_classes.count(name) != 0;
  }
  if (module == k_shard_tp) {
    return name == "TensorProperties" || name == "MEM_FORMAT_ENCODING";
  }
  if (module == std::string(k_old) + ".filesystem" ||
      module == std::string(k_new) + ".filesystem") {
    return name == "_StorageInfo";
  }
  return false;
}

bool is_memory_format_enum(const Node* node) {
  return node->kind == NodeKind::k_global &&
         (node->name == "MEM_FORMAT_ENCODING" || node->name == "_MEM_FORMAT_ENCODING") &&
         is_dcp_class(node->text.str(), node->name.str());
}

bool is_allowed_global(const Node& global) {
  std::string module = global.text.str();
  std::string name = global.name.str();
  if (is_dcp_class(module, name)) {
    return true;
  }
  if (module == "torch") {
    return name == "Size" || dtype_of_torch_name(name).has_value();
  }
  if (module == "torch.serialization") {
    return name == "_get_layout";  // copyreg's reduction of torch.strided (1.13 and 2.x)
  }
  if (module == "pathlib" || module == "pathlib._local") {  // StorageMeta.checkpoint_id
    return name == "PosixPath" || name == "PurePosixPath";
  }
  if (module == "collections") {
    return name == "OrderedDict";
  }
  return module == "builtins" && name == "getattr";  // checked where it is called
}

// Refuses any global but the DCP classes and their data, and any
// `builtins.getattr` but of a memory-format enum member by name.
void check_globals(const Node* root, const std::string& name) {
  const Node* refused = nullptr;
  for_each_reachable(root, [&](const Node* node) {
    if (refused != nullptr) {
      return false;
    }
    if (node->kind == NodeKind::k_global && !is_allowed_global(*node)) {
      refused = node;
      return false;
    }
    if (node->kind == NodeKind::k_call && node->callable != nullptr &&
        node->callable->is_global("builtins", "getattr")) {
      const Node* args = node->args;
      if (args == nullptr || args->items.size() != 2 || !is_memory_format_enum(args->items[0]) ||
          !args->items[1]->is_str()) {
        refused = node->callable;
        return false;
      }
    }
    return true;
  });
  if (refused != nullptr) {
    throw Error(name + ": global " + qualified_name(*refused) +
                (refused->is_global("builtins", "getattr") ? " (but on a DCP enum)" : "") +
                " is not a DCP class or its data: refused (nothing of the pickle is run); "
                "a .metadata names only torch.distributed.checkpoint classes, torch.Size, "
                "dtypes and PosixPath");
  }
}

// Reads the interpreted fields, each message naming `m_name` and where.
class Reader {
public:
  explicit Reader(const std::string& name) : m_name(name) {}

  [[noreturn]] void fail(const std::string& what) const { throw Error(m_name + ": " + what); }

  // The class `node` is an object of (`module.name`), or "".
  static std::string class_of(const Node* node) {
    if (node->kind != NodeKind::k_call || node->callable == nullptr ||
        node->callable->kind != NodeKind::k_global) {
      return "";
    }
    return node->callable->name.str();
  }
  // The BUILD state dict of a `cls` object at `where`.
  const Node* state_of(const Node* node, const char* cls, const std::string& where) const {
    if (class_of(node) != cls) {
      fail(where + ": " + kind_text(node) + ", not a " + cls);
    }
    if (node->state == nullptr || node->state->kind != NodeKind::k_dict) {
      if (std::string(cls) == "BytesStorageMetadata") {
        return nullptr;
      }
      fail(where + ": a " + cls + " without its fields (no BUILD dict)");
    }
    return node->state;
  }
  const Node* field(const Node* state, const char* key, const std::string& where) const {
    const Node* value = state != nullptr ? dict_get(state, key) : nullptr;
    if (value == nullptr) {
      fail(where + ": no field '" + key + "'");
    }
    return value;
  }
  int64_t integer(const Node* node, const std::string& where) const {
    if (node->kind != NodeKind::k_int || !node->text.empty()) {
      fail(where + ": " + kind_text(node) + ", not an int");
    }
    return node->integer;
  }
  uint64_t count(const Node* node, const std::string& where) const {
    int64_t value = integer(node, where);
    if (value < 0) {
      fail(where + ": " + std::to_string(value) + " is negative");
    }
    return static_cast<uint64_t>(value);
  }
  std::string text(const Node* node, const std::string& where) const {
    if (!node->is_str()) {
      fail(where + ": " + kind_text(node) + ", not a str");
    }
    return node->text.str();
  }
  // A `torch.Size(tuple)`, or a plain tuple.
  Dims dims(const Node* node, const std::string& where) const {
    const Node* tuple = node;
    if (node->kind == NodeKind::k_call && node->callable != nullptr &&
        node->callable->is_global("torch", "Size") && node->args != nullptr &&
        node->args->items.size() == 1) {
      tuple = node->args->items[0];
    }
    if (tuple->kind != NodeKind::k_tuple && tuple->kind != NodeKind::k_list) {
      fail(where + ": " + kind_text(node) + ", not a torch.Size");
    }
    if (tuple->items.size() > 64) {
      fail(where + ": " + std::to_string(tuple->items.size()) + " dimensions");
    }
    Dims out;
    for (const Node* item : tuple->items) {
      out.push_back(static_cast<int64_t>(count(item, where)));
    }
    return out;
  }

private:
  const std::string& m_name;
};

// Elements of a box of `sizes`, or nullopt past 2^62.
std::optional<int64_t> volume(const Dims& sizes) {
  int64_t n = 1;
  for (int64_t size : sizes) {
    if (size != 0 && n > (int64_t{1} << 62) / size) {
      return std::nullopt;
    }
    n *= size;
  }
  return n;
}

// A lookup key of `storage_data`: the fqn, and the chunk offsets unless it is
// a bytes item (a MetadataIndex without `offset`).
std::string index_key(const std::string& fqn, const std::optional<Dims>& offset) {
  std::string key = fqn;
  key += '\0';
  if (offset) {
    key += 'o';
    for (int64_t value : *offset) {
      key += std::to_string(value) + ",";
    }
  }
  return key;
}

// Which torch the class paths come from (§2.6).
std::string profile_of(const Node* root, const Node* any_properties) {
  if (root->callable->text == std::string(k_old) + ".metadata") {
    return "1.13";
  }
  if (any_properties == nullptr) {
    return "2.0+";
  }
  return any_properties->callable->text == k_shard_tp ? "2.0-2.2" : "2.3+";
}

// Checks that the chunks of `item` lie inside it, do not overlap, and cover it.
void check_chunks(const Reader& r, const DcpItem& item, const std::vector<DcpChunk>& all) {
  std::string where = "tensor " + quoted_name(item.fqn);
  std::optional<int64_t> numel = volume(item.size);
  if (!numel) {
    r.fail(where + ": size " + dims_text(item.size) + " holds over 2^62 elements");
  }
  int64_t covered = 0;
  for (const DcpChunk& chunk : all) {
    if (chunk.offsets.size() != item.size.size() || chunk.sizes.size() != item.size.size()) {
      r.fail(where + ": chunk at offsets " + dims_text(chunk.offsets) + " has " +
             std::to_string(chunk.sizes.size()) + " dimensions, the tensor " +
             std::to_string(item.size.size()));
    }
    for (size_t d = 0; d < item.size.size(); ++d) {
      if (chunk.offsets[d] > item.size[d] || chunk.sizes[d] > item.size[d] - chunk.offsets[d]) {
        r.fail(where + ": chunk at offsets " + dims_text(chunk.offsets) + " of sizes " +
               dims_text(chunk.sizes) + " reaches past its size " + dims_text(item.size));
      }
    }
    covered += *volume(chunk.sizes);  // inside the tensor: no overflow
    if (covered > *numel) {
      break;  // an overlap, found below
    }
  }
  // Boxes pairwise: a tensor has a chunk per rank that holds part of it.
  for (size_t i = 0; i < item.chunks.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      const DcpChunk& a = item.chunks[i];
      const DcpChunk& b = item.chunks[j];
      bool meet = true;
      for (size_t d = 0; d < a.offsets.size() && meet; ++d) {
        meet = a.offsets[d] < b.offsets[d] + b.sizes[d] && b.offsets[d] < a.offsets[d] + a.sizes[d];
      }
      if (meet) {
        r.fail(where + ": chunk at offsets " + dims_text(a.offsets) + " of sizes " +
               dims_text(a.sizes) + " overlaps the chunk at offsets " + dims_text(b.offsets) +
               " of sizes " + dims_text(b.sizes));
      }
    }
  }
  if (covered != *numel) {
    r.fail(where + ": its chunks hold " + std::to_string(covered) + " of its " +
           std::to_string(*numel) + " elements: they do not cover the tensor");
  }
}

bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

}  // namespace

int64_t DcpChunk::numel() const { return volume(sizes).value_or(0); }

DcpMetadata parse_dcp_metadata(ByteSpan bytes, const std::string& name) {
  if (bytes.size > k_dcp_metadata_max_bytes) {
    throw Error(name + ": " + std::to_string(bytes.size) + " bytes, more than the " +
                std::to_string(k_dcp_metadata_max_bytes >> 20) + " MiB a .metadata may hold");
  }
  Graph graph;
  PersistentLoader no_persistent = [&](Graph&, Node*) -> Node* {
    throw FormatError("a persistent id: a .metadata is a plain pickle, not a torch.save");
  };
  Node* root = nullptr;
  try {
    root = decode_pickle(graph, bytes, no_persistent);
  } catch (const FormatError& e) {
    throw in_file(name, e);
  }
  check_globals(root, name);
  Reader r(name);
  if (Reader::class_of(root) != "Metadata") {
    r.fail("the pickle holds " + kind_text(root) + ", not a DCP Metadata");
  }
  const Node* meta = r.state_of(root, "Metadata", "Metadata");
  DcpMetadata out;

  // storage_data: MetadataIndex → _StorageInfo.
  std::unordered_map<std::string, DcpStorageInfo> storage;
  std::set<std::string> files;
  const Node* storage_data = r.field(meta, "storage_data", "Metadata");
  if (storage_data->kind != NodeKind::k_dict) {
    r.fail("Metadata.storage_data: " + kind_text(storage_data) + ", not a dict");
  }
  for (const NodeEntry& entry : storage_data->entries) {
    const Node* index = r.state_of(entry.first, "MetadataIndex", "storage_data key");
    std::string fqn = r.text(r.field(index, "fqn", "MetadataIndex"), "MetadataIndex.fqn");
    std::string where = "storage_data[" + quoted_name(fqn) + "]";
    std::optional<Dims> offset;
    if (const Node* value = dict_get(index, "offset"); value != nullptr &&
                                                         value->kind != NodeKind::k_none) {
      offset = r.dims(value, where + ".offset");
    }
    const Node* info = r.state_of(entry.second, "_StorageInfo", where);
    DcpStorageInfo located;
    located.relative_path = r.text(r.field(info, "relative_path", where), where + ".relative_path");
    located.offset = r.count(r.field(info, "offset", where), where + ".offset");
    located.length = r.count(r.field(info, "length", where), where + ".length");
    if (!plain_file_name(located.relative_path)) {
      r.fail(where + ": relative_path " + quoted_name(located.relative_path) +
             " is not a file name in the checkpoint folder");
    }
    if (located.offset > std::numeric_limits<uint64_t>::max() - located.length) {
      r.fail(where + ": offset + length overflows");
    }
    // ≈2.7 stream extensions (PR #143359): the slice is a transformed stream.
    if (const Node* transforms = dict_get(info, "transform_descriptors");
        transforms != nullptr && transforms->kind != NodeKind::k_none &&
        !transforms->items.empty()) {
      std::string names;
      for (const Node* item : transforms->items) {
        names += (names.empty() ? "" : ", ") +
                 (item->is_str() ? quoted_name(item->text) : kind_text(item));
      }
      r.fail(where + ": stored through the stream transform " + names +
             " (torch >= 2.7 _extensions, e.g. zstd): not supported; save without "
             "_extensions, or load and re-save it in Python");
    }
    if (!storage.emplace(index_key(fqn, offset), located).second) {
      r.fail(where + ": two storage_data entries for one " +
             (offset ? "chunk (offsets " + dims_text(*offset) + ")" : std::string("item")));
    }
    files.insert(located.relative_path);
  }
  auto locate = [&](const std::string& fqn, const std::optional<Dims>& offset) {
    auto found = storage.find(index_key(fqn, offset));
    if (found == storage.end()) {
      r.fail("storage_data has no entry for " +
             (offset ? "the chunk at offsets " + dims_text(*offset) + " of tensor "
                     : std::string("the item ")) +
             quoted_name(fqn) + ": where it was written is unknown");
    }
    return found->second;
  };

  const Node* sdm = r.field(meta, "state_dict_metadata", "Metadata");
  if (sdm->kind != NodeKind::k_dict) {
    r.fail("Metadata.state_dict_metadata: " + kind_text(sdm) + ", not a dict");
  }
  const Node* any_properties = nullptr;
  std::set<std::string> seen;
  for (const NodeEntry& entry : sdm->entries) {
    DcpItem item;
    item.fqn = r.text(entry.first, "state_dict_metadata key");
    std::string where = "state_dict_metadata[" + quoted_name(item.fqn) + "]";
    if (!seen.insert(item.fqn).second) {
      r.fail(where + ": the key twice");
    }
    if (Reader::class_of(entry.second) == "BytesStorageMetadata") {
      item.where = locate(item.fqn, std::nullopt);
      out.items.push_back(std::move(item));
      continue;
    }
    item.is_tensor = true;
    const Node* tensor = r.state_of(entry.second, "TensorStorageMetadata", where);
    const Node* properties = r.field(tensor, "properties", where);
    if (Reader::class_of(properties) != "TensorProperties") {
      r.fail(where + ".properties: " + kind_text(properties) + ", not a TensorProperties");
    }
    any_properties = any_properties != nullptr ? any_properties : properties;
    // A 5-tuple (dtype, layout, requires_grad, memory_format, pin_memory)
    // from its __getstate__, or a plain __dict__.
    const Node* state = properties->state;
    const Node* dtype = state == nullptr                   ? nullptr
                        : state->kind == NodeKind::k_tuple ? (state->items.empty()
                                                                  ? nullptr
                                                                  : state->items[0])
                        : state->kind == NodeKind::k_dict  ? dict_get(state, "dtype")
                                                           : nullptr;
    std::optional<Dtype> parsed;
    if (dtype != nullptr && dtype->kind == NodeKind::k_global && dtype->text == "torch") {
      parsed = dtype_of_torch_name(dtype->name);
    }
    if (!parsed) {
      r.fail(where + ".properties: no torch dtype");
    }
    item.dtype = *parsed;
    item.size = r.dims(r.field(tensor, "size", where), where + ".size");
    const Node* chunks = r.field(tensor, "chunks", where);
    if (chunks->kind != NodeKind::k_list && chunks->kind != NodeKind::k_tuple) {
      r.fail(where + ".chunks: " + kind_text(chunks) + ", not a list");
    }
    std::vector<DcpChunk> all;
    for (const Node* node : chunks->items) {
      const Node* chunk_state = r.state_of(node, "ChunkStorageMetadata", where + ".chunks");
      DcpChunk chunk;
      chunk.offsets = r.dims(r.field(chunk_state, "offsets", where), where + ".chunks offsets");
      chunk.sizes = r.dims(r.field(chunk_state, "sizes", where), where + ".chunks sizes");
      all.push_back(chunk);
    }
    for (DcpChunk& chunk : all) {
      // An empty chunk (a DTensor rank past the end) holds nothing to read.
      if (std::find(chunk.sizes.begin(), chunk.sizes.end(), 0) == chunk.sizes.end() &&
          chunk.sizes.size() == item.size.size()) {
        item.chunks.push_back(chunk);
      }
    }
    check_chunks(r, item, all);
    for (DcpChunk& chunk : item.chunks) {
      chunk.where = locate(item.fqn, chunk.offsets);
    }
    out.items.push_back(std::move(item));
  }
  out.profile = profile_of(root, any_properties);

  // planner_data (2.0+): flattened key → path tuple.
  const Node* planner = dict_get(meta, "planner_data");
  if (planner != nullptr && planner->kind != NodeKind::k_none) {
    if (planner->kind != NodeKind::k_dict) {
      r.fail("Metadata.planner_data: " + kind_text(planner) + ", not a dict");
    }
    out.has_planner_data = true;
    std::unordered_map<std::string, DcpItem*> by_fqn;
    for (DcpItem& item : out.items) {
      by_fqn.emplace(item.fqn, &item);
    }
    for (const NodeEntry& entry : planner->entries) {
      std::string fqn = r.text(entry.first, "planner_data key");
      std::string where = "planner_data[" + quoted_name(fqn) + "]";
      const Node* path = entry.second;
      if ((path->kind != NodeKind::k_tuple && path->kind != NodeKind::k_list) ||
          path->items.empty()) {
        r.fail(where + ": " + kind_text(path) + ", not a path (a tuple of str and int)");
      }
      auto found = by_fqn.find(fqn);
      if (found == by_fqn.end()) {
        continue;  // upstream places only the keys it loads
      }
      std::vector<DcpPathStep> steps;
      for (const Node* step : path->items) {
        DcpPathStep parsed_step;
        if (step->is_str()) {
          parsed_step.key = step->text.str();
        } else if (step->kind == NodeKind::k_int && step->text.empty() && step->integer >= 0 &&
                   static_cast<uint64_t>(step->integer) < out.items.size()) {
          // A list holds at most one element per item below it.
          parsed_step.is_index = true;
          parsed_step.index = step->integer;
        } else {
          r.fail(where + ": a step is " + kind_text(step) +
                 (step->kind == NodeKind::k_int ? " out of range" : "") +
                 ", not a str or a list index");
        }
        steps.push_back(std::move(parsed_step));
      }
      found->second->path = std::move(steps);
    }
  }
  if (const Node* version = dict_get(meta, "version"); version != nullptr && version->is_str()) {
    out.version = version->text.str();
  }
  if (const Node* storage_meta = dict_get(meta, "storage_meta");
      storage_meta != nullptr && storage_meta->kind != NodeKind::k_none) {
    out.has_storage_meta = true;
  }
  out.files.assign(files.begin(), files.end());
  return out;
}

Node* build_dcp_nested(Graph& graph, const DcpMetadata& metadata,
                       const std::vector<Node*>& leaves, const std::string& name) {
  Node* root = graph.make(NodeKind::k_dict);
  // Each dict's keys → their entry index, so that a state dict of 100,000
  // keys is built in linear time.
  std::unordered_map<const Node*, std::unordered_map<std::string, size_t>> keys;
  auto where = [&](const DcpItem& item) {
    return name + ": planner_data[" + quoted_name(item.fqn) + "]";
  };
  for (size_t i = 0; i < metadata.items.size(); ++i) {
    const DcpItem& item = metadata.items[i];
    std::vector<DcpPathStep> top;
    const std::vector<DcpPathStep>* path = &item.path;
    if (path->empty()) {
      top.push_back({false, 0, item.fqn});
      path = &top;
    }
    Node* container = root;
    for (size_t s = 0; s < path->size(); ++s) {
      const DcpPathStep& step = (*path)[s];
      bool last = s + 1 == path->size();
      Node** slot = nullptr;
      if (step.is_index) {
        if (container->kind != NodeKind::k_list) {
          throw Error(where(item) + ": step " + std::to_string(step.index) +
                      " indexes a dict, not a list");
        }
        while (container->items.size() <= static_cast<size_t>(step.index)) {
          graph.push_back(container->items, graph.make(NodeKind::k_none));
        }
        slot = &container->items[static_cast<size_t>(step.index)];
      } else {
        if (container->kind != NodeKind::k_dict) {
          throw Error(where(item) + ": step " + quoted_name(step.key) +
                      " is a key into a list, not a dict");
        }
        auto [it, added] = keys[container].emplace(step.key, container->entries.size());
        if (added) {
          graph.push_back(container->entries,
                          NodeEntry{graph.make_str(step.key), graph.make(NodeKind::k_none)});
        }
        slot = &container->entries[it->second].second;
      }
      bool empty = (*slot)->kind == NodeKind::k_none;
      if (last) {
        if (!empty) {
          throw Error(where(item) + ": another item is already at its place");
        }
        *slot = leaves[i];
        break;
      }
      if (empty) {
        *slot = graph.make((*path)[s + 1].is_index ? NodeKind::k_list : NodeKind::k_dict);
      } else if ((*slot)->kind != NodeKind::k_dict && (*slot)->kind != NodeKind::k_list) {
        throw Error(where(item) + ": its path runs through another item's value");
      }
      container = *slot;
    }
  }
  return root;
}

}  // namespace ckpt
