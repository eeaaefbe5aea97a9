// The sinks of `--max-shard-size`: OUT becomes a folder of HuggingFace shards,
// `model-00001-of-0000N.safetensors` and `model.safetensors.index.json`
// (`--format pt`: `pytorch_model-00001-of-0000N.bin` and
// `pytorch_model.bin.index.json`), as transformers' `save_pretrained(
// max_shard_size=…)` lays them out: split as huggingface_hub splits
// (shard_plan.h), each shard a safetensors file (safetensors_writer.h) or a
// torch.save archive of an OrderedDict of its names (torch_archive.h), the
// index written as transformers writes it. One shard is a single
// `model.safetensors` (`pytorch_model.bin`) and no index.
//
// safetensors sizes are the bytes each tensor is written with (its elements,
// cast), not its storage's as huggingface_hub counts them: views of a flat
// buffer (FSDP, DeepSpeed) are written contiguous here, so counting the
// buffer for each would put them all in one shard. An alias of `--tied
// dedupe` goes with its kept name and counts nothing; it stays in the index's
// weight_map (its shard's `__metadata__` names it), so every name of the
// state dict is there. A torch archive holds whole storages, so there sizes
// are storages' and names sharing one stay in one shard, as huggingface_hub
// does it.
//
// Shards of an earlier write in OUT are refused without --force; with it,
// those the new write does not replace are removed once it is in place.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "ckpt/shard_plan.h"
#include "ckpt/sink.h"
#include "ckpt/tensor.h"
#include "ckpt/verify.h"
#include "formats/safetensors_writer.h"
#include "formats/torch_archive.h"

namespace ckpt {
namespace {

std::string in_folder(const std::string& folder, const std::string& name) {
  return folder + (folder.empty() || folder.back() == '/' ? "" : "/") + name;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

// plan_shards, refusing a state dict with nothing to split.
ShardPlan split(const std::vector<ShardItem>& items, uint64_t max_shard_size) {
  ShardPlan shards = plan_shards(items, max_shard_size);
  if (shards.shards.empty()) {
    throw FormatError("the state dict holds no tensor: no shard to write");
  }
  return shards;
}

class ShardsSink final : public Sink {
public:
  explicit ShardsSink(ShardFormat format) : m_format(format) {}

  void prepare(const WriteRequest& request) override {
    m_check = cast_check_for(request);
    if (m_format == ShardFormat::k_pt) {
      plan_archives(request);
    } else {
      plan_safetensors(request);
    }
    check_existing(request);
  }

  Written write(const WriteRequest& request, OutputFiles& out) override {
    const std::string& folder = request.shown_as;
    Written written;
    uint64_t total = m_index.size();
    for (const SafetensorsFile& shard : m_shards) {
      total += shard.size();
    }
    for (const TorchArchive& archive : m_archives) {
      total += archive.storage_bytes();
    }
    uint64_t done = 0;
    for (size_t k = 0; k < m_files.size(); ++k) {
      std::string path = in_folder(folder, m_files[k]);
      const TempFile& temp = out.create(path);
      int fd = temp.fd();
      m_rereads.push_back(request.verified ? std::make_unique<RereadBehind>(temp.path())
                                           : nullptr);
      RereadBehind* reread = m_rereads.back().get();
      ShardWritten shard{m_files[k], 0, 0};
      if (m_format == ShardFormat::k_pt) {
        const TorchArchive& archive = m_archives[k];
        ProgressFn progress;
        if (request.progress) {
          progress = [&](const char* stage, uint64_t n, uint64_t) {
            request.progress(stage, done + n, total);
          };
        }
        shard.bytes = archive.write(fd, path, progress, m_casts, request.source_reads,
                                    m_check ? &*m_check : nullptr, reread);
        shard.tensors = archive.tensors();
        written.tensors += archive.tensors();
        written.storages += archive.storages();
        written.storage_bytes += archive.storage_bytes();
        done += archive.storage_bytes();
      } else {
        const SafetensorsFile& file = m_shards[k];
        file.write(fd, path, request.progress, done, total, m_check ? &*m_check : nullptr,
                   reread);
        shard.bytes = file.size();
        shard.tensors = file.entries().size();
        written.tensors += file.tensors();
        written.storages += file.tensors();
        written.storage_bytes += file.data_size();
        done += file.size();
      }
      if (reread != nullptr) {
        reread->close();  // its thread ends once it has caught up, as the next shard is written
      }
      written.bytes += shard.bytes;
      written.shards.push_back(shard);
    }
    if (!m_index.empty()) {
      std::string name = index_file_name(m_format);
      std::string path = in_folder(folder, name);
      TempFile& index = out.create(path);
      write_all(index.fd(), m_index.data(), m_index.size(), path);
      written.bytes += m_index.size();
      written.shards.push_back({name, m_weight_map.size(), m_index.size()});
    }
    written.tied = m_tied;
    return written;
  }

  VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                      const std::string& device) override {
    const std::string& folder = request.shown_as;
    VerifyReport report;
    report.device = device;
    for (size_t k = 0; k < m_files.size(); ++k) {
      std::string shown_as = in_folder(folder, m_files[k]);
      const std::string& path = out.files()[k].path();
      RereadBehind* reread = m_rereads[k].get();
      if (reread != nullptr) {
        reread->wait();
      }
      VerifyReport shard = m_format == ShardFormat::k_pt
                               ? m_archives[k].verify(path, shown_as, device, request, m_casts,
                                                      m_check ? &*m_check : nullptr, reread)
                               : m_shards[k].verify(path, shown_as, device,
                                                    {request.input, request.input_records,
                                                     request.source_reads, request.proven_reads,
                                                     m_check ? &*m_check : nullptr, reread});
      report.tensors += shard.tensors;
      report.storages += shard.storages;
      report.bytes += shard.bytes;
      report.device_checked += shard.device_checked;
    }
    if (!m_index.empty()) {
      verify_index(out.files().back().path(), in_folder(folder, index_file_name(m_format)));
    }
    return report;
  }

  std::vector<ShardWritten> planned() const override {
    std::vector<ShardWritten> files;
    for (size_t k = 0; k < m_files.size(); ++k) {
      if (m_format == ShardFormat::k_pt) {
        files.push_back({m_files[k], m_archives[k].tensors(), m_archives[k].storage_bytes()});
      } else {
        files.push_back({m_files[k], m_shards[k].entries().size(), m_shards[k].size()});
      }
    }
    if (!m_index.empty()) {
      files.push_back({index_file_name(m_format), m_weight_map.size(), m_index.size()});
    }
    return files;
  }

  void after_commit(const WriteRequest& request) override {
    for (const std::string& name : m_stale) {
      std::string path = in_folder(request.shown_as, name);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw Error(path + ": cannot remove the stale shard: " + std::strerror(errno));
      }
      spdlog::warn("{}: removed, left by an earlier write (--force)", path);
    }
  }

private:
  // The safetensors shards: the state dict planned as for one file, split by
  // the bytes each name is written with.
  void plan_safetensors(const WriteRequest& request) {
    StateDictPlan plan = plan_state_dict(request);
    m_tied = std::move(plan.tied);
    std::vector<NamedTensor>& entries = plan.entries;
    std::unordered_map<std::string, size_t> index_of;
    for (size_t i = 0; i < entries.size(); ++i) {
      index_of.emplace(entries[i].name, i);
    }
    std::vector<ShardItem> items;
    for (size_t i = 0; i < entries.size(); ++i) {
      const NamedTensor& e = entries[i];
      uint64_t bytes = e.written ? static_cast<uint64_t>(e.tensor.numel()) *
                                       static_cast<uint64_t>(element_size(e.written_dtype))
                                 : 0;
      items.push_back({e.name, bytes, e.written ? i : index_of.at(e.kept)});
    }
    ShardPlan shards = split(items, request.options.max_shard_size);
    size_t count = shards.shards.size();
    std::vector<std::pair<std::string, std::string>> weight_map;
    for (size_t k = 0; k < count; ++k) {
      std::vector<NamedTensor> names;
      std::string file = shard_file_name(ShardFormat::k_safetensors, k, count);
      for (size_t i : shards.shards[k]) {
        names.push_back(entries[i]);
        weight_map.emplace_back(entries[i].name, file);
      }
      m_files.push_back(file);
      m_shards.emplace_back(std::move(names));
    }
    finish_plan(shards.total_size, std::move(weight_map));
  }

  // The torch archives: an OrderedDict of each shard's names, split by the
  // bytes of the storages they hold (storages shared by names kept together).
  void plan_archives(const WriteRequest& request) {
    m_casts = retype_for_dtype(request);
    const Node* root = request.root;
    if (root == nullptr || root->kind != NodeKind::k_dict) {
      throw FormatError("shards hold a state dict (names to tensors); this is no dict");
    }
    std::vector<std::pair<std::string, Node*>> entries;
    std::vector<ShardItem> items;
    std::unordered_map<const Storage*, uint64_t> storage_ids;
    for (const NodeEntry& item : root->entries) {
      std::optional<TensorRef> tensor = as_tensor(item.second);
      if (!item.first->is_str() || !tensor) {
        throw FormatError("'" + (item.first->is_str() ? item.first->text.str() : "?") +
                          "' is not a tensor: shards hold tensors only (--drop it)");
      }
      const Storage* storage = tensor->storage;
      uint64_t id = storage_ids.emplace(storage, storage_ids.size()).first->second;
      uint64_t bytes = static_cast<uint64_t>(storage->numel) * element_size(storage->dtype);
      entries.emplace_back(item.first->text.str(), item.second);
      items.push_back({entries.back().first, bytes, id});
    }
    ShardPlan shards = split(items, request.options.max_shard_size);
    size_t count = shards.shards.size();
    std::vector<std::pair<std::string, std::string>> weight_map;
    for (size_t k = 0; k < count; ++k) {
      std::vector<std::pair<std::string, Node*>> names;
      std::string file = shard_file_name(ShardFormat::k_pt, k, count);
      for (size_t i : shards.shards[k]) {
        names.push_back(entries[i]);
        weight_map.emplace_back(entries[i].first, file);
      }
      Node* shard_root = make_state_dict(*request.graph, names);
      m_archives.emplace_back(shard_root, tensors_reachable(shard_root, names.size()),
                              request.pickle_bytes / count + 4096);
      m_files.push_back(file);
    }
    finish_plan(shards.total_size, std::move(weight_map));
  }

  // The index (two shards or more).
  void finish_plan(uint64_t total_size,
                   std::vector<std::pair<std::string, std::string>> weight_map) {
    m_total_size = total_size;
    if (m_files.size() > 1) {
      m_index = hf_index_json(m_total_size, weight_map, {});
      m_weight_map = std::move(weight_map);
    }
  }

  // Refuses shards of an earlier write without --force; with it, notes those
  // the new write leaves behind.
  void check_existing(const WriteRequest& request) {
    const std::string& folder = request.shown_as;
    std::vector<std::string> existing = stale_shard_files(folder, m_format);
    if (!existing.empty() && !request.options.replace) {
      throw Error(folder + ": refusing to overwrite: it holds shards already (" +
                      joined(existing) + "); use --force to replace them",
                  ExitStatus::k_usage);
    }
    std::set<std::string> written(m_files.begin(), m_files.end());
    if (m_files.size() > 1) {
      written.insert(index_file_name(m_format));
    }
    for (const std::string& name : existing) {
      if (written.count(name) == 0) {
        m_stale.push_back(name);
      }
    }
  }

  // The index reads back as the text laid out, and as JSON names every name
  // of the state dict with the file that holds it and the total size.
  void verify_index(const std::string& path, const std::string& shown_as) const {
    MappedFile file = MappedFile::open(path);
    ByteSpan bytes = file.bytes();
    if (bytes.size != m_index.size() || std::memcmp(bytes.data, m_index.data(), bytes.size) != 0) {
      verification_failed(shown_as, "the index read back differs from the one written");
    }
    nlohmann::json index = nlohmann::json::parse(m_index, nullptr, false);
    if (index.is_discarded() || !index["weight_map"].is_object() ||
        index["metadata"]["total_size"] != m_total_size ||
        index["weight_map"].size() != m_weight_map.size()) {
      verification_failed(shown_as, "the index is not the JSON of the shards written");
    }
    for (const auto& [name, shard] : m_weight_map) {
      auto found = index["weight_map"].find(name);
      if (found == index["weight_map"].end() || *found != shard) {
        verification_failed(shown_as, "the index does not map '" + name + "' to " + shard);
      }
    }
  }

  ShardFormat m_format;
  std::vector<SafetensorsFile> m_shards;  // safetensors: one per shard
  std::vector<std::unique_ptr<RereadBehind>> m_rereads;  // per shard, when verified
  std::deque<TorchArchive> m_archives;    // pt: one per shard
  StorageCasts m_casts;                   // pt with --dtype: storages written cast
  std::optional<CastCheck> m_check;       // --dtype, verified: casts checked as written
  std::vector<std::string> m_files;       // the shards' names in OUT
  std::vector<std::pair<std::string, std::string>> m_weight_map;
  std::string m_index;               // the index's text; empty for one shard
  uint64_t m_total_size = 0;
  std::vector<std::string> m_stale;  // earlier shards the write leaves behind
  std::vector<TiedNames> m_tied;
};

bool claims_nothing(const std::string& /*output*/) { return false; }

std::unique_ptr<Sink> make_safetensors_shards() {
  return std::make_unique<ShardsSink>(ShardFormat::k_safetensors);
}

std::unique_ptr<Sink> make_pt_shards() { return std::make_unique<ShardsSink>(ShardFormat::k_pt); }

}  // namespace

extern const SinkFormat k_hf_shards_sink{"safetensors-shards",
                                         "a folder of HuggingFace safetensors shards",
                                         claims_nothing, true, true, make_safetensors_shards};
extern const SinkFormat k_pt_shards_sink{"pt-shards", "a folder of HuggingFace pytorch_model shards",
                                         claims_nothing, true, true, make_pt_shards};

}  // namespace ckpt
