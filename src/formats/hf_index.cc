// The HuggingFace sharded-checkpoint reader: an index JSON
// (`model.safetensors.index.json`, `pytorch_model.bin.index.json`, or a folder
// holding one) whose `weight_map` names the shard file of every tensor. It
// reads as ONE state dict: an OrderedDict of every tensor the index lists, in
// `weight_map` order, each the node its shard's own reader made, so that
// storages shared inside a shard stay shared and every later stage reads it
// as it reads one file.
//
// Each shard is read by the table's reader for its format (source.h) into
// this one Checkpoint: its map appended to `files` (a deque: the maps earlier
// storages point at do not move), its graph nodes into the same graph. A
// storage's key then gets its shard's record prefix
// (`<dir>/model-00001-of-00002.safetensors: tensor 'w'`) and
// `storage_records` is empty, so messages name the shard a tensor is in.
//
// Refused, naming the index: a shard name that leaves the index's folder (by
// name, in the parser, or through a symlink, here), a missing shard, a shard
// in another format than the index's, a shard whose root is no state dict of
// tensors, a listed tensor its shard lacks, a tensor two shards hold. Read
// with a warning (`Checkpoint::warnings`): tensors a shard holds that the
// index does not list (left out, as transformers ignores them), shard-like
// files in the folder the index does not name (not read), and a
// `metadata.total_size` other than the tensors' storage bytes.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/source.h"
#include "ckpt/tensor.h"

namespace ckpt {
namespace {

namespace fs = std::filesystem;

bool sniff_hf_index(const std::string& path, ByteSpan file) {
  if (looks_like_hf_index(file)) {
    return true;
  }
  // A damaged index called by its name (truncated before "weight_map"):
  // read, to be refused as what it is.
  std::string_view text(reinterpret_cast<const char*>(file.data), file.size);
  size_t start = text.find_first_not_of(" \t\r\n");
  return hf_index_format_of_name(path) && start != std::string_view::npos && text[start] == '{';
}

// "a, b, c and 4 more" of `names`.
std::string some_of(const std::vector<std::string>& names) {
  constexpr size_t k_shown = 3;
  std::string out;
  for (size_t i = 0; i < names.size() && i < k_shown; ++i) {
    out += (i == 0 ? "" : ", ") + quoted_name(names[i]);
  }
  if (names.size() > k_shown) {
    out += " and " + std::to_string(names.size() - k_shown) + " more";
  }
  return out;
}

// The folder an index at `path` is in, as a path to prefix shard names with
// ("" for the current one).
std::string folder_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

// Checks that the shard `shard` of the index `path` is a file inside the
// index's real folder `real_folder`, following symlinks; throws otherwise.
void check_shard_file(const std::string& path, const std::string& shard,
                      const std::string& shard_path, const fs::path& real_folder,
                      const std::string& tensor) {
  std::string where =
      path + ": shard " + quoted_name(shard) + " (of tensor " + quoted_name(tensor) + ")";
  std::error_code ec;
  fs::path real = fs::canonical(shard_path, ec);
  if (ec == std::errc::no_such_file_or_directory) {
    throw Error(where + ": no such file: " + shard_path);
  }
  if (ec) {
    throw Error(where + ": " + shard_path + ": " + ec.message());
  }
  std::string inside = real_folder.string();
  if (inside.empty() || inside.back() != '/') {
    inside += '/';
  }
  if (real.string().compare(0, inside.size(), inside) != 0) {
    throw Error(where + ": resolves to " + real.string() +
                ", outside the index's folder (a symlink out of it?)");
  }
  if (!fs::is_regular_file(real, ec)) {
    throw Error(where + ": " + shard_path + " is not a regular file");
  }
}

// The table's reader of the shard `file` at `shard_path` for an index of
// `format` shards; throws when none or another claims it.
const SourceFormat& shard_reader(const std::string& path, const std::string& shard,
                                 const std::string& shard_path, ByteSpan file,
                                 HfShardFormat format) {
  std::string where = path + ": shard " + quoted_name(shard);
  if (file.size == 0) {
    throw Error(where + ": " + shard_path + " is empty");
  }
  for (const SourceFormat& reader : source_formats()) {
    if (std::strcmp(reader.name, "hf-index") == 0 || !reader.sniff(shard_path, file)) {
      continue;
    }
    bool safetensors = std::strcmp(reader.name, "safetensors") == 0;
    if (safetensors != (format == HfShardFormat::k_safetensors)) {
      throw Error(where + ": " + shard_path + " is " + reader.described + ", not " +
                  (format == HfShardFormat::k_safetensors ? "a safetensors file"
                                                          : "a torch.save file") +
                  " as the index's shards are");
    }
    return reader;
  }
  throw Error(where + ": " + shard_path + " is not a PyTorch checkpoint");
}

// Which shard holds each tensor, and the nodes, as read so far.
struct Held {
  std::string shard;
  Node* tensor = nullptr;
};

void read_hf_index(const std::string& path, Checkpoint& ckpt) {
  ByteSpan index_bytes = ckpt.bytes;
  HfIndex index = parse_hf_index(index_bytes, path);
  if (ckpt.files.empty()) {
    throw Error(path + ": an HF shard index read from memory: its shards are files, not read");
  }
  std::string folder = folder_of(path);
  std::error_code ec;
  fs::path real_folder = fs::canonical(folder.empty() ? "." : folder, ec);
  if (ec) {
    throw Error(path + ": its folder cannot be resolved: " + ec.message());
  }
  std::unordered_map<std::string, const std::string*> first_tensor_of;  // shard → a tensor
  std::unordered_set<std::string> listed;
  for (const auto& [tensor, shard] : index.weight_map) {
    first_tensor_of.emplace(shard, &tensor);
    listed.insert(tensor);
  }

  // Shard-like files beside the index that it does not name.
  std::vector<std::string> stray;
  std::unordered_set<std::string> named(index.shards.begin(), index.shards.end());
  for (const fs::directory_entry& entry : fs::directory_iterator(real_folder, ec)) {
    std::string file = entry.path().filename().string();
    if (named.count(file) != 0) {
      continue;
    }
    for (const std::string& shard : index.shards) {
      if (is_hf_shard_like(file, shard)) {
        stray.push_back(file);
        break;
      }
    }
  }
  if (!stray.empty()) {
    std::sort(stray.begin(), stray.end());
    ckpt.warnings.push_back(std::to_string(stray.size()) + " shard file(s) beside " + path +
                            " that its weight_map does not name, not read: " + some_of(stray));
  }

  Graph& graph = ckpt.graph;
  std::unordered_map<std::string, Held> held;
  uint64_t pickle_bytes = 0;
  std::string first_hint;
  for (const std::string& shard : index.shards) {
    std::string shard_path = folder + shard;
    check_shard_file(path, shard, shard_path, real_folder, *first_tensor_of.at(shard));
    ckpt.files.push_back(MappedFile::open(shard_path));
    ckpt.bytes = ckpt.files.back().bytes();
    const SourceFormat& reader = shard_reader(path, shard, shard_path, ckpt.bytes, index.format);
    size_t first_storage = graph.storages().size();
    reader.read(shard_path, ckpt);
    pickle_bytes += ckpt.pickle_bytes;
    if (first_hint.empty()) {
      first_hint = ckpt.fact("torch_hint");
    }
    for (size_t i = first_storage; i < graph.storages().size(); ++i) {
      Storage& storage = graph.storages()[i];
      storage.key = ckpt.storage_records + storage.key;
    }

    std::string where = path + ": shard " + quoted_name(shard);
    const Node* root = graph.root;
    if (root == nullptr || root->kind != NodeKind::k_dict) {
      throw Error(where + ": its root is not a state dict (a dict of tensors)");
    }
    std::vector<std::string> unlisted;
    for (const NodeEntry& entry : root->entries) {
      if (!entry.first->is_str()) {
        throw Error(where + ": its root is not a state dict: a key is not a string");
      }
      std::string key = entry.first->text.str();
      try {
        if (!as_tensor(entry.second)) {
          throw Error(where + ": its root is not a state dict of tensors: " + quoted_name(key) +
                      " is not a tensor");
        }
      } catch (const FormatError& e) {
        throw Error(shard_path + ":" + ckpt.pickle_record + ": " + quoted_name(key) + ": " +
                    e.what());
      }
      auto [it, inserted] = held.emplace(key, Held{shard, entry.second});
      if (!inserted) {
        throw Error(path + ": tensor " + quoted_name(key) + " is held by two shards, " +
                    quoted_name(it->second.shard) + " and " + quoted_name(shard));
      }
      if (listed.count(key) == 0) {
        unlisted.push_back(key);
      }
    }
    if (!unlisted.empty()) {
      ckpt.warnings.push_back("shard " + quoted_name(shard) + " holds " +
                              std::to_string(unlisted.size()) +
                              " tensor(s) that the weight_map of " + path +
                              " does not list, left out: " + some_of(unlisted));
    }
  }

  std::vector<std::pair<std::string, Node*>> entries;
  entries.reserve(index.weight_map.size());
  std::unordered_set<const Storage*> storages;
  uint64_t total = 0;
  for (const auto& [tensor, shard] : index.weight_map) {
    auto found = held.find(tensor);
    if (found == held.end() || found->second.shard != shard) {
      std::string elsewhere =
          found == held.end() ? "" : " (it is in " + quoted_name(found->second.shard) + ")";
      throw Error(path + ": weight_map: tensor " + quoted_name(tensor) + ": not in its shard " +
                  quoted_name(shard) + elsewhere);
    }
    entries.emplace_back(tensor, found->second.tensor);
    const Storage* storage = as_tensor(found->second.tensor)->storage;
    if (storages.insert(storage).second) {
      total += storage->bytes.size;
    }
  }
  if (index.total_size && *index.total_size != total) {
    ckpt.warnings.push_back(path + ": metadata.total_size is " +
                            std::to_string(*index.total_size) + " bytes, but the tensors' " +
                            "storages hold " + std::to_string(total));
  }
  graph.root = make_state_dict(graph, entries);
  ckpt.bytes = index_bytes;
  ckpt.pickle_record = "weight_map";
  ckpt.pickle_bytes = pickle_bytes;
  ckpt.storage_records.clear();
  std::string shards = std::to_string(index.shards.size()) +
                       (index.format == HfShardFormat::k_safetensors ? " safetensors shard"
                                                                     : " .bin shard") +
                       (index.shards.size() == 1 ? "" : "s");
  ckpt.facts = {{"archive_name", ""},
                {"version", ""},
                {"torch_hint", "HF sharded checkpoint, " + shards + ": " + first_hint}};
}

}  // namespace

std::string find_hf_index(const std::string& folder) {
  std::string prefix = folder.empty() || folder.back() == '/' ? folder : folder + "/";
  for (const char* name : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    struct stat info {};
    if (::stat((prefix + name).c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      return prefix + name;
    }
  }
  // Another name (a variant, `model.safetensors.index.fp16.json`, or
  // another stem): one safetensors index, else one .bin index.
  std::vector<std::string> found[2];
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, ec)) {
    std::string name = entry.path().filename().string();
    std::optional<HfShardFormat> format = hf_index_format_of_name(name);
    if (format && entry.is_regular_file(ec)) {
      found[*format == HfShardFormat::k_safetensors ? 0 : 1].push_back(name);
    }
  }
  if (ec) {
    throw Error(folder + ": cannot list the folder: " + ec.message());
  }
  for (std::vector<std::string>& names : found) {
    std::sort(names.begin(), names.end());
    if (names.size() == 1) {
      return prefix + names[0];
    }
    if (names.size() > 1) {
      throw Error(folder + ": a folder with several HF indexes (" + some_of(names) +
                  "): give the one to read");
    }
  }
  // No index: a checkpoint of one shard is its single file, as
  // save_pretrained writes it and from_pretrained reads it.
  for (const char* name : {"model.safetensors", "pytorch_model.bin"}) {
    struct stat info {};
    if (::stat((prefix + name).c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      return prefix + name;
    }
  }
  throw Error(folder + ": a folder, and no checkpoint ckpt-convert reads: no HF shard index "
                       "(model.safetensors.index.json or pytorch_model.bin.index.json), "
                       "model.safetensors or pytorch_model.bin, no DeepSpeed run (`latest` and "
                       "*_model_states.pt) and no DCP `.metadata`");
}

bool holds_hf_index(const std::string& folder) {
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::error_code ignored;
    if (hf_index_format_of_name(it->path().filename().string()) && it->is_regular_file(ignored)) {
      return true;
    }
  }
  return false;
}

extern const SourceFormat k_hf_index{"hf-index", "hf-index", nullptr, sniff_hf_index,
                                     read_hf_index};

}  // namespace ckpt
