// This file opens checkpoints: it tells the container formats apart, decodes
// the pickle with a persistent-id loader that binds each storage to its bytes
// in the mapped file, and validates every tensor against its storage.
//
// Two containers exist. torch >= 1.6 writes a zip archive (`<name>/data.pkl`,
// `<name>/data/<key>`, `<name>/version`, and from 2.x `byteorder` and a few
// dot-records). Older torch, and `_use_new_zipfile_serialization=False`,
// write the legacy stream: five pickles (magic number, protocol version,
// sys_info, the object, the sorted storage keys) and then each storage as an
// int64 element count and its raw bytes.
#include "ckpt/checkpoint.h"

#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/zip.h"

namespace ckpt {
namespace {

// torch.serialization.MAGIC_NUMBER (0x1950a86a20f9469cfc6c) as LONG1 bytes.
constexpr uint8_t k_legacy_magic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t k_legacy_protocol = 1001;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

// Joins a location and a FormatError message: `file:record` + `@12: …` or `: …`.
std::string located(const std::string& where, const FormatError& e) {
  std::string message = e.what();
  return message.rfind('@', 0) == 0 ? where + message : where + ": " + message;
}

bool is_tar(ByteSpan file) {
  return file.size >= 262 && std::memcmp(file.data + 257, "ustar", 5) == 0;
}

// What a storage persistent id says.
struct StorageId {
  Node* type = nullptr;
  Node* location = nullptr;
  Dtype dtype = Dtype::k_untyped;
  std::string key;
  int64_t numel = 0;
};

// The fields of a storage persistent id, checked. `fields` are the tuple's
// items after the 'storage' tag: type, key, location, numel[, view].
StorageId parse_storage_id(Node* const* fields) {
  StorageId id;
  id.type = fields[0];
  Node* key = fields[1];
  id.location = fields[2];
  Node* numel = fields[3];
  if (id.type->kind != NodeKind::k_global || id.type->text != "torch") {
    throw FormatError("storage type is not a torch storage class");
  }
  std::optional<Dtype> dtype = dtype_of_storage_class(id.type->name);
  if (!dtype) {
    throw FormatError("unknown storage class torch." + id.type->name);
  }
  id.dtype = *dtype;
  if (key->kind != NodeKind::k_str && key->kind != NodeKind::k_int) {
    throw FormatError("storage key is not a str");
  }
  id.key = key->is_str() ? key->text.str() : std::to_string(key->integer);
  if (!id.location->is_str()) {
    throw FormatError("storage location is not a str");
  }
  if (numel->kind != NodeKind::k_int || !numel->text.empty() || numel->integer < 0 ||
      numel->integer > (int64_t{1} << 56)) {
    throw FormatError("storage '" + id.key + "' has an invalid element count");
  }
  id.numel = numel->integer;
  return id;
}

// The storage `id` stands for: `known`, the one made before for its key
// (which must agree), or a new one.
Storage* storage_for(Graph& graph, const StorageId& id, Storage* known) {
  if (known != nullptr) {
    if (known->dtype != id.dtype || known->numel != id.numel) {
      throw FormatError("storage '" + id.key + "' is declared twice with different types");
    }
    return known;
  }
  Storage* storage = graph.make_storage();
  storage->key = id.key;
  storage->type = id.type;
  storage->location = id.location;
  storage->dtype = id.dtype;
  storage->numel = id.numel;
  return storage;
}

// Unpacks `('storage', type, key, location, numel[, view])`; returns the other
// fields (in the tuple), or throws naming what is wrong.
Node* const* storage_id_fields(const Node* id, size_t field_count) {
  if (id->kind != NodeKind::k_tuple || id->items.empty()) {
    throw FormatError("persistent id is not a tuple");
  }
  Node* tag = id->items[0];
  bool is_storage = (tag->is_str() || tag->kind == NodeKind::k_bytes) && tag->text == "storage";
  if (!is_storage) {
    throw FormatError("persistent id of unknown kind (only storages are allowed)");
  }
  if (id->items.size() != field_count + 1) {
    throw FormatError("storage persistent id has " + std::to_string(id->items.size()) +
                      " fields, expected " + std::to_string(field_count + 1));
  }
  return id->items.data() + 1;
}

Node* storage_node(Graph& graph, Storage* storage) {
  Node* node = graph.make(NodeKind::k_storage);
  node->storage = storage;
  return node;
}

void collect_tensors(Checkpoint& ckpt) {
  try {
    ckpt.tensors = tensors_reachable(ckpt.graph.root, ckpt.graph.storages().size());
  } catch (const FormatError& e) {
    throw Error(located(ckpt.path + ":" + ckpt.pickle_record, e));
  }
}

// --- zip ---------------------------------------------------------------------

// A storage record (`data/<key>`) and the storage made for it once a
// persistent id names it.
struct StorageRecord {
  const ZipEntry* entry = nullptr;
  Storage* storage = nullptr;
};

// Storage records by key. torch.save numbers its storages 0, 1, 2…: a key
// written that way indexes a vector, which a state dict's persistent ids
// walk in order (a hash map's lookups of 50,000 keys missed the cache for
// 5% of a conversion). Other keys, from hand-made archives, go to a map
// keyed by views of the names in the mapped file.
class StorageRecords {
public:
  explicit StorageRecords(size_t record_count) : m_numbered(record_count) {}

  void add(std::string_view key, const ZipEntry* entry) {
    if (std::optional<size_t> index = number(key)) {
      m_numbered[*index].entry = entry;
    } else {
      m_named[key].entry = entry;
    }
  }
  StorageRecord* find(std::string_view key) {
    if (std::optional<size_t> index = number(key)) {
      StorageRecord& record = m_numbered[*index];
      return record.entry != nullptr ? &record : nullptr;
    }
    auto found = m_named.find(key);
    return found != m_named.end() ? &found->second : nullptr;
  }

private:
  // `key` as torch.save writes a number (no sign, no leading zero), if it is
  // one below the record count.
  std::optional<size_t> number(std::string_view key) const {
    if (key.empty() || key.size() > 9 || (key[0] == '0' && key.size() > 1)) {
      return std::nullopt;
    }
    size_t value = 0;
    for (char c : key) {
      if (c < '0' || c > '9') {
        return std::nullopt;
      }
      value = value * 10 + static_cast<size_t>(c - '0');
    }
    return value < m_numbered.size() ? std::optional<size_t>(value) : std::nullopt;
  }

  std::vector<StorageRecord> m_numbered;
  std::unordered_map<std::string_view, StorageRecord> m_named;
};

void read_zip(Checkpoint& ckpt) {
  ByteSpan file = ckpt.bytes;
  std::vector<ZipEntry> entries;
  try {
    entries = read_zip_index(file);
  } catch (const FormatError& e) {
    throw Error(located(ckpt.path, e));
  }
  if (entries.empty()) {
    fail(ckpt.path, "not a PyTorch checkpoint: the zip archive is empty");
  }
  size_t slash = entries[0].name.find('/');
  if (slash == std::string::npos || slash == 0) {
    fail(ckpt.path, "not a PyTorch checkpoint: zip record '" + std::string(entries[0].name) +
                        "' is not inside an archive folder");
  }
  ckpt.archive_name = entries[0].name.substr(0, slash);
  std::string prefix = ckpt.archive_name + "/";
  // The storage records (`data/<key>`) by key; the other records by name,
  // keyed by views of the names, which are in the mapped file.
  StorageRecords storage_records(entries.size());
  std::unordered_map<std::string_view, const ZipEntry*> by_name;
  ckpt.records.reserve(entries.size());
  for (const ZipEntry& entry : entries) {
    if (entry.name.compare(0, prefix.size(), prefix) != 0) {
      fail(ckpt.path, "zip record '" + std::string(entry.name) +
                          "' lies outside the archive folder '" + prefix + "'");
    }
    std::string_view name = entry.name.substr(prefix.size());
    ckpt.records.emplace_back(name);
    if (name.compare(0, 5, "data/") == 0) {
      storage_records.add(name.substr(5), &entry);
    } else {
      by_name.emplace(name, &entry);
    }
  }
  if (by_name.count("constants.pkl") != 0 || by_name.count("code/") != 0 ||
      std::any_of(ckpt.records.begin(), ckpt.records.end(),
                  [](const std::string& r) { return r.rfind("code/", 0) == 0; })) {
    fail(ckpt.path, "TorchScript archive (torch.jit.save) is not supported: ckpt-convert reads "
                    "torch.save checkpoints; save the module's state_dict() with torch.save");
  }
  auto record_of = [&](const ZipEntry* entry) -> ByteSpan {
    if (entry->method != 0) {
      fail(ckpt.path + ":" + std::string(entry->name),
           "record is compressed (method " + std::to_string(entry->method) +
               "); torch.save stores records uncompressed: re-save the checkpoint");
    }
    return {file.data + entry->data_offset, entry->size};
  };
  auto record = [&](const std::string& name) { return record_of(by_name.at(name)); };
  if (by_name.count("data.pkl") == 0) {
    fail(ckpt.path, "not a PyTorch checkpoint: the zip archive has no data.pkl record");
  }
  if (by_name.count("byteorder") != 0) {
    ByteSpan order = record("byteorder");
    std::string text(reinterpret_cast<const char*>(order.data), order.size);
    if (text != "little") {
      fail(ckpt.path + ":" + prefix + "byteorder",
           "big-endian checkpoints are not supported (byteorder '" + text.substr(0, 16) + "')");
    }
  }
  if (by_name.count("version") != 0) {
    ByteSpan version = record("version");
    ckpt.version.assign(reinterpret_cast<const char*>(version.data),
                        std::min<uint64_t>(version.size, 32));
    while (!ckpt.version.empty() && (ckpt.version.back() == '\n' || ckpt.version.back() == '\r')) {
      ckpt.version.pop_back();
    }
  }

  ckpt.pickle_record = prefix + "data.pkl";
  const ZipEntry* pickle_entry = by_name.at("data.pkl");
  ByteSpan pickle = record("data.pkl");
  ckpt.pickle_bytes = pickle.size;
  if (crc32_of(pickle) != pickle_entry->crc32) {
    fail(ckpt.path + ":" + ckpt.pickle_record, "CRC-32 mismatch: the record is corrupt");
  }

  PersistentLoader load = [&](Graph& graph, Node* id) -> Node* {
    StorageId storage_id = parse_storage_id(storage_id_fields(id, 4));
    StorageRecord* found = storage_records.find(storage_id.key);
    if (found == nullptr) {
      throw FormatError("storage '" + storage_id.key + "' has no record '" + prefix + "data/" +
                        storage_id.key + "'");
    }
    StorageRecord& slot = *found;
    bool is_new = slot.storage == nullptr;
    Storage* storage = slot.storage = storage_for(graph, storage_id, slot.storage);
    if (is_new) {
      const ZipEntry* entry = slot.entry;
      ByteSpan bytes = record_of(entry);
      uint64_t needed = static_cast<uint64_t>(storage->numel) *
                        static_cast<uint64_t>(element_size(storage->dtype));
      if (bytes.size < needed) {
        throw FormatError("storage record '" + prefix + "data/" + storage->key + "' holds " +
                          std::to_string(bytes.size) + " bytes, but its " +
                          std::to_string(storage->numel) + " elements need " +
                          std::to_string(needed));
      }
      storage->bytes = {bytes.data, needed};
      storage->file_offset = static_cast<uint64_t>(bytes.data - file.data);
      storage->has_crc32 = entry->size == needed;
      storage->crc32 = entry->crc32;
    }
    return storage_node(graph, storage);
  };
  try {
    ckpt.graph.root = decode_pickle(ckpt.graph, pickle, load, nullptr,
                                    pickle.data - file.data);
  } catch (const FormatError& e) {
    throw Error(located(ckpt.path + ":" + ckpt.pickle_record, e));
  }
}

// --- legacy --------------------------------------------------------------------

void read_legacy(Checkpoint& ckpt) {
  ByteSpan file = ckpt.bytes;
  uint64_t pos = 0;
  PersistentLoader no_ids = [](Graph&, Node*) -> Node* {
    throw FormatError("persistent id outside the object pickle");
  };
  auto next_pickle = [&](const PersistentLoader& load) {
    uint64_t used = 0;
    Node* root = decode_pickle(ckpt.graph, {file.data + pos, file.size - pos}, load, &used, pos);
    pos += used;
    return root;
  };
  ckpt.pickle_record = "legacy pickle";
  Node* magic = nullptr;
  try {
    magic = next_pickle(no_ids);
  } catch (const FormatError&) {
    magic = nullptr;
  }
  bool has_magic = magic != nullptr && magic->kind == NodeKind::k_int &&
                   magic->text == std::string(reinterpret_cast<const char*>(k_legacy_magic),
                                                     sizeof k_legacy_magic);
  if (!has_magic) {
    fail(ckpt.path, "not a PyTorch checkpoint (neither a zip archive nor a torch.save legacy "
                    "file)");
  }

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
    Node* protocol = next_pickle(no_ids);
    if (protocol->kind != NodeKind::k_int || protocol->integer != k_legacy_protocol) {
      fail(ckpt.path, "unsupported legacy protocol version (expected 1001)");
    }
    Node* sys_info = next_pickle(no_ids);
    for (const auto& [key, value] : sys_info->entries) {
      if (key->is_str() && key->text == "little_endian" && value->kind == NodeKind::k_bool &&
          !value->boolean) {
        fail(ckpt.path, "big-endian checkpoints are not supported");
      }
    }
    uint64_t object_start = pos;
    ckpt.graph.root = next_pickle(load);
    ckpt.pickle_bytes = pos - object_start;
    keys = next_pickle(no_ids);
  } catch (const FormatError& e) {
    throw Error(located(ckpt.path, e));
  }
  if (keys->kind != NodeKind::k_list) {
    fail(ckpt.path, "legacy storage key list is not a list");
  }
  for (const Node* key : keys->items) {
    if (!key->is_str()) {
      fail(ckpt.path, "legacy storage key is not a str");
    }
    auto found = by_key.find(key->text);
    if (found == by_key.end()) {
      fail(ckpt.path, "legacy storage '" + key->text + "' is listed but never used");
    }
    Storage* storage = found->second;
    std::string where = ckpt.path + "@" + std::to_string(pos);
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
    storage->file_offset = pos;
    pos += bytes;
  }
  for (const auto& [key, storage] : by_key) {
    if (storage->bytes.data == nullptr && storage->numel > 0) {
      fail(ckpt.path, "legacy storage '" + std::string(key) + "' is used but its bytes are missing");
    }
  }
}

}  // namespace

const char* format_name(ContainerFormat format) {
  return format == ContainerFormat::k_zip ? "zip" : "legacy";
}

namespace {

void parse(Checkpoint& ckpt) {
  const std::string& path = ckpt.path;
  ByteSpan file = ckpt.bytes;
  if (file.size == 0) {
    fail(path, "empty file");
  }
  if (looks_like_zip(file)) {
    ckpt.format = ContainerFormat::k_zip;
    read_zip(ckpt);
  } else if (is_tar(file)) {
    fail(path, "tar-format checkpoint (torch < 0.4) is not supported: load it with an old "
               "torch and save it again with torch.save");
  } else {
    ckpt.format = ContainerFormat::k_legacy;
    read_legacy(ckpt);
  }
  collect_tensors(ckpt);
}

}  // namespace

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint ckpt;
  ckpt.path = path;
  ckpt.file = MappedFile::open(path);
  ckpt.bytes = ckpt.file.bytes();
  parse(ckpt);
  return ckpt;
}

Checkpoint read_checkpoint_bytes(const std::string& name, ByteSpan bytes) {
  Checkpoint ckpt;
  ckpt.path = name;
  ckpt.bytes = bytes;
  parse(ckpt);
  return ckpt;
}

}  // namespace ckpt
