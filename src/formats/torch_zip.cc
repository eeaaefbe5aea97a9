// The torch zip reader (torch >= 1.6): a zip archive of stored records,
// `<name>/data.pkl`, `<name>/data/<key>` for each storage,
// `<name>/version`, and from 2.x `byteorder` and a few dot-records. The
// pickle is decoded with a persistent-id loader that binds each storage to
// its record's bytes in the mapped file, with the record's CRC-32 when the
// record holds exactly the storage's bytes.
#include <algorithm>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/source.h"
#include "ckpt/zip.h"
#include "formats/torch_storage_id.h"

namespace ckpt {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

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

bool sniff_torch_zip(const std::string&, ByteSpan file) { return looks_like_zip(file); }

void read_torch_zip(const std::string& path, Checkpoint& ckpt) {
  ByteSpan file = ckpt.bytes;
  std::vector<ZipEntry> entries;
  try {
    entries = read_zip_index(file);
  } catch (const FormatError& e) {
    throw in_file(path, e);
  }
  if (entries.empty()) {
    fail(path, "not a PyTorch checkpoint: the zip archive is empty");
  }
  size_t slash = entries[0].name.find('/');
  if (slash == std::string::npos || slash == 0) {
    fail(path, "not a PyTorch checkpoint: zip record '" + std::string(entries[0].name) +
                   "' is not inside an archive folder");
  }
  std::string archive_name(entries[0].name.substr(0, slash));
  std::string prefix = archive_name + "/";
  // The storage records (`data/<key>`) by key; the other records by name,
  // keyed by views of the names, which are in the mapped file.
  StorageRecords storage_records(entries.size());
  std::unordered_map<std::string_view, const ZipEntry*> by_name;
  for (const ZipEntry& entry : entries) {
    if (entry.name.compare(0, prefix.size(), prefix) != 0) {
      fail(path, "zip record '" + std::string(entry.name) +
                     "' lies outside the archive folder '" + prefix + "'");
    }
    std::string_view name = entry.name.substr(prefix.size());
    if (name.compare(0, 5, "data/") == 0) {
      storage_records.add(name.substr(5), &entry);
    } else {
      by_name.emplace(name, &entry);
    }
  }
  if (std::any_of(by_name.begin(), by_name.end(), [](const auto& named) {
        return named.first == "constants.pkl" || named.first.rfind("code/", 0) == 0;
      })) {
    fail(path, "TorchScript archive (torch.jit.save) is not supported: ckpt-convert reads "
               "torch.save checkpoints; save the module's state_dict() with torch.save");
  }
  auto record_of = [&](const ZipEntry* entry) -> ByteSpan {
    if (entry->method != 0) {
      fail(path + ":" + std::string(entry->name),
           "record is compressed (method " + std::to_string(entry->method) +
               "); torch.save stores records uncompressed: re-save the checkpoint");
    }
    return {file.data + entry->data_offset, entry->size};
  };
  auto record = [&](const std::string& name) { return record_of(by_name.at(name)); };
  if (by_name.count("data.pkl") == 0) {
    fail(path, "not a PyTorch checkpoint: the zip archive has no data.pkl record");
  }
  if (by_name.count("byteorder") != 0) {
    ByteSpan order = record("byteorder");
    std::string text(reinterpret_cast<const char*>(order.data), order.size);
    if (text != "little") {
      fail(path + ":" + prefix + "byteorder",
           "big-endian checkpoints are not supported (byteorder '" + text.substr(0, 16) + "')");
    }
  }
  std::string version;
  if (by_name.count("version") != 0) {
    ByteSpan bytes = record("version");
    version.assign(reinterpret_cast<const char*>(bytes.data), std::min<uint64_t>(bytes.size, 32));
    while (!version.empty() && (version.back() == '\n' || version.back() == '\r')) {
      version.pop_back();
    }
  }
  bool torch2 = by_name.count(".format_version") != 0 ||
                by_name.count(".data/serialization_id") != 0 || by_name.count("byteorder") != 0;
  ckpt.facts = {{"archive_name", archive_name},
                {"version", version},
                {"torch_hint", torch2 ? "torch 2.x or ckpt-convert (zip with a byteorder record)"
                                      : "torch 1.6 or later (zip)"}};
  ckpt.storage_records = path + ":" + prefix + "data/";

  ckpt.pickle_record = prefix + "data.pkl";
  const ZipEntry* pickle_entry = by_name.at("data.pkl");
  ByteSpan pickle = record("data.pkl");
  ckpt.pickle_bytes = pickle.size;
  if (crc32_of(pickle) != pickle_entry->crc32) {
    fail(path + ":" + ckpt.pickle_record, "CRC-32 mismatch: the record is corrupt");
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
      storage->file = ckpt.mapped();
      storage->file_offset = static_cast<uint64_t>(bytes.data - file.data);
      storage->has_crc32 = entry->size == needed;
      storage->crc32 = entry->crc32;
    }
    return storage_node(graph, storage);
  };
  try {
    ckpt.graph.root = decode_pickle(ckpt.graph, pickle, load, nullptr, pickle.data - file.data);
  } catch (const FormatError& e) {
    throw in_file(path + ":" + ckpt.pickle_record, e);
  }
}

}  // namespace

extern const SourceFormat k_torch_zip{"torch-zip", "zip", "a zip archive", sniff_torch_zip,
                                      read_torch_zip};

}  // namespace ckpt
