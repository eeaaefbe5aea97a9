// The safetensors reader: an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw
// little-endian bytes. Recognised by content, never by name, and tried after
// the torch formats. The header is parsed and validated by the codec
// (safetensors_codec.h), with every check the reference reader applies; the
// graph built from it is what torch.load's pickle of the same state dict
// decodes to: an OrderedDict, in header order, of one `_rebuild_tensor_v2`
// call per tensor over its own storage, which is the tensor's byte range of
// the mapped file. So `convert`, `inspect`, `check` and verification read it
// as they read a torch checkpoint. The `__metadata__` strings become facts
// (`metadata.<key>`); a `removed: kept` entry that `save_model` wrote for a
// tied weight it dropped restores the removed name as a view of the kept
// tensor's storage.
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/safetensors_codec.h"
#include "ckpt/source.h"
#include "ckpt/tensor.h"
#include "formats/torch_storage_id.h"

namespace ckpt {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

// A git-lfs pointer (a clone without `git lfs pull`) is no checkpoint of any
// format; safetensors, tried last, says what it is.
bool sniff_safetensors(const std::string& path, ByteSpan file) {
  if (is_git_lfs_pointer(file)) {
    fail(path, "not a PyTorch checkpoint: a git-lfs pointer, not the file: run git lfs pull");
  }
  return looks_like_safetensors(file, file.size);
}

void read_safetensors(const std::string& path, Checkpoint& ckpt) {
  SafetensorsHeader header;
  try {
    header = parse_safetensors_header(ckpt.bytes, ckpt.bytes.size);
  } catch (const FormatError& e) {
    throw in_file(path, e);
  }
  ckpt.pickle_record = "header";
  ckpt.pickle_bytes = header.header_size;
  ckpt.storage_records = path + ": tensor ";
  ckpt.facts = {{"archive_name", ""}, {"version", ""}, {"torch_hint", "safetensors (no pickle)"}};

  Graph& graph = ckpt.graph;
  std::vector<std::pair<std::string, Node*>> entries;
  entries.reserve(header.tensors.size());
  // Each tensor's storage, dtype and sizes by name, for the aliases.
  struct Made {
    Storage* storage;
    Dtype dtype;
    Dims sizes;
  };
  std::unordered_map<std::string, Made> by_name;
  for (const SafetensorsEntry& entry : header.tensors) {
    std::string where = path + ": tensor '" + entry.name + "'";
    if (!entry.dtype) {
      fail(where, "dtype " + entry.dtype_name +
                      " has no PyTorch dtype ckpt-convert reads (F4, F6_* and F8_E8M0 are not "
                      "supported)");
    }
    Dims sizes;
    for (uint64_t size : entry.shape) {
      if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(where, "dimension " + std::to_string(size) + " is past 2^63 - 1");
      }
      sizes.push_back(static_cast<int64_t>(size));
    }
    uint64_t size = entry.end - entry.begin;
    Storage* storage = make_tensor_storage(
        graph, *entry.dtype, static_cast<int64_t>(size / element_size(*entry.dtype)),
        "'" + entry.name + "'");
    storage->bytes = {ckpt.bytes.data + header.data_start + entry.begin, size};
    storage->file = ckpt.mapped();
    storage->file_offset = header.data_start + entry.begin;
    Node* tensor = make_tensor(graph, storage, *entry.dtype, sizes);
    entries.emplace_back(entry.name, tensor);
    by_name.emplace(entry.name, Made{storage, *entry.dtype, sizes});
  }
  if (header.metadata) {
    for (const auto& [key, value] : *header.metadata) {
      ckpt.facts.emplace_back("metadata." + key, value);
    }
    // `removed: kept`: a name that is no tensor mapped to one that is. The
    // conventional `format` key is never an alias, even beside a tensor named
    // `pt` (save_model never removes a name `format` from a state dict that
    // has one: it would record it under that very key, which is taken).
    for (const auto& [removed, kept] : *header.metadata) {
      auto found = by_name.find(kept);
      if (removed == "format" || found == by_name.end() || by_name.count(removed) != 0) {
        continue;
      }
      const Made& made = found->second;
      entries.emplace_back(removed, make_tensor(graph, made.storage, made.dtype, made.sizes));
    }
  }
  graph.root = make_state_dict(graph, entries);
}

}  // namespace

extern const SourceFormat k_safetensors{"safetensors", "safetensors", "a safetensors file",
                                        sniff_safetensors, read_safetensors};

}  // namespace ckpt
