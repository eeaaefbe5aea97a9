// The torch legacy reader: what torch < 1.6 writes, and later torch with
// `_use_new_zipfile_serialization=False`. The stream is five pickles (magic
// number, protocol version, sys_info, the object, the sorted storage keys)
// and then each storage as an int64 element count and its raw bytes. The
// file is claimed by its first pickle, the magic number; a tar-format file
// (torch < 0.4) is recognised and refused.
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/source.h"
#include "formats/torch_storage_id.h"

namespace ckpt {
namespace {

// torch.serialization.MAGIC_NUMBER (0x1950a86a20f9469cfc6c) as LONG1 bytes.
constexpr uint8_t k_legacy_magic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t k_legacy_protocol = 1001;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

bool is_tar(ByteSpan file) {
  return file.size >= 262 && std::memcmp(file.data + 257, "ustar", 5) == 0;
}

const PersistentLoader& no_persistent_ids() {
  static const PersistentLoader no_ids = [](Graph&, Node*) -> Node* {
    throw FormatError("persistent id outside the object pickle");
  };
  return no_ids;
}

// True when the first pickle of `file`, decoded into `graph`, is the magic number.
bool starts_with_magic(Graph& graph, ByteSpan file, uint64_t* used) {
  Node* magic = nullptr;
  try {
    magic = decode_pickle(graph, file, no_persistent_ids(), used, 0);
  } catch (const FormatError&) {
    magic = nullptr;
  }
  return magic != nullptr && magic->kind == NodeKind::k_int &&
         magic->text == std::string(reinterpret_cast<const char*>(k_legacy_magic),
                                    sizeof k_legacy_magic);
}

bool sniff_torch_legacy(const std::string& path, ByteSpan file) {
  if (is_tar(file)) {
    fail(path, "tar-format checkpoint (torch < 0.4) is not supported: load it with an old "
               "torch and save it again with torch.save");
  }
  Graph scratch;
  uint64_t used = 0;
  return starts_with_magic(scratch, file, &used);
}

void read_torch_legacy(const std::string& path, Checkpoint& ckpt) {
  ByteSpan file = ckpt.bytes;
  uint64_t pos = 0;
  auto next_pickle = [&](const PersistentLoader& load) {
    uint64_t used = 0;
    Node* root = decode_pickle(ckpt.graph, {file.data + pos, file.size - pos}, load, &used, pos);
    pos += used;
    return root;
  };
  ckpt.pickle_record = "legacy pickle";
  ckpt.facts = {
      {"torch_hint", "torch < 1.6, or torch.save(..., _use_new_zipfile_serialization=False)"}};
  // Messages use this only for a storage whose record CRC-32 fails; a legacy
  // storage has no record and no CRC-32. The text is what it always was.
  ckpt.storage_records = path + ":/data/";
  uint64_t used = 0;
  if (!starts_with_magic(ckpt.graph, file, &used)) {
    fail(path, "not a PyTorch checkpoint (neither a zip archive nor a torch.save legacy file)");
  }
  pos = used;

  // Storages by key, viewing `Storage::key` (in the graph's deque: it never moves).
  std::unordered_map<std::string_view, Storage*> by_key;
  PersistentLoader load = [&](Graph& graph, Node* id) -> Node* {
    if (id->kind == NodeKind::k_tuple && !id->items.empty() && id->items[0]->is_str() &&
        id->items[0]->text == "module") {
      // ('module', class, source_file, source): torch.load returns the class.
      if (id->items.size() < 2) {
        throw FormatError("module persistent id without a class");
      }
      return id->items[1];
    }
    Node* const* fields = storage_id_fields(id, 5);
    if (fields[4]->kind != NodeKind::k_none) {
      throw FormatError("legacy storage views are not supported");
    }
    StorageId storage_id = parse_storage_id(fields);
    auto found = by_key.find(storage_id.key);
    Storage* storage = storage_for(graph, storage_id, found == by_key.end() ? nullptr : found->second);
    if (found == by_key.end()) {
      by_key.emplace(storage->key, storage);
    }
    return storage_node(graph, storage);
  };
  Node* keys = nullptr;
  try {
    Node* protocol = next_pickle(no_persistent_ids());
    if (protocol->kind != NodeKind::k_int || protocol->integer != k_legacy_protocol) {
      fail(path, "unsupported legacy protocol version (expected 1001)");
    }
    Node* sys_info = next_pickle(no_persistent_ids());
    for (const auto& [key, value] : sys_info->entries) {
      if (key->is_str() && key->text == "little_endian" && value->kind == NodeKind::k_bool &&
          !value->boolean) {
        fail(path, "big-endian checkpoints are not supported");
      }
    }
    uint64_t object_start = pos;
    ckpt.graph.root = next_pickle(load);
    ckpt.pickle_bytes = pos - object_start;
    keys = next_pickle(no_persistent_ids());
  } catch (const FormatError& e) {
    throw in_file(path, e);
  }
  if (keys->kind != NodeKind::k_list) {
    fail(path, "legacy storage key list is not a list");
  }
  for (const Node* key : keys->items) {
    if (!key->is_str()) {
      fail(path, "legacy storage key is not a str");
    }
    auto found = by_key.find(key->text);
    if (found == by_key.end()) {
      fail(path, "legacy storage '" + key->text + "' is listed but never used");
    }
    Storage* storage = found->second;
    std::string where = path + "@" + std::to_string(pos);
    if (file.size - pos < 8) {
      fail(where, "truncated: storage '" + key->text + "' header missing");
    }
    int64_t count = 0;
    std::memcpy(&count, file.data + pos, 8);  // little-endian, checked above
    if (count != storage->numel) {
      fail(where, "storage '" + key->text + "' holds " + std::to_string(count) +
                      " elements, its persistent id says " + std::to_string(storage->numel));
    }
    pos += 8;
    uint64_t bytes = static_cast<uint64_t>(count) * static_cast<uint64_t>(element_size(storage->dtype));
    if (file.size - pos < bytes) {
      fail(where, "truncated: storage '" + key->text + "' needs " + std::to_string(bytes) +
                      " bytes, " + std::to_string(file.size - pos) + " left");
    }
    storage->bytes = {file.data + pos, bytes};
    storage->file = ckpt.mapped();
    storage->file_offset = pos;
    pos += bytes;
  }
  for (const auto& [key, storage] : by_key) {
    if (storage->bytes.data == nullptr && storage->numel > 0) {
      fail(path, "legacy storage '" + std::string(key) + "' is used but its bytes are missing");
    }
  }
}

}  // namespace

extern const SourceFormat k_torch_legacy{"torch-legacy", "legacy", "a torch.save legacy file",
                                         sniff_torch_legacy, read_torch_legacy};

}  // namespace ckpt
