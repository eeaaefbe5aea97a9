// The sink of `--max-shard-size`: OUT becomes a folder of HuggingFace shards,
// `model-00001-of-0000N.safetensors` and `model.safetensors.index.json`, as
// transformers' `save_pretrained(max_shard_size=…)` lays them out: split as
// huggingface_hub splits (shard_plan.h), each shard a safetensors file of its
// names (safetensors_writer.h), the index written as transformers writes it.
// One shard is a single `model.safetensors` and no index.
//
// Sizes are the bytes each tensor is written with (its elements, cast), not
// its storage's as huggingface_hub counts them: views of a flat buffer
// (FSDP, DeepSpeed) are written contiguous here, so counting the buffer for
// each would put them all in one shard. An alias of `--tied dedupe` goes with
// its kept name and counts nothing; it stays in the index's weight_map (its
// shard's `__metadata__` names it), so every name of the state dict is there.
//
// Shards of an earlier write in OUT are refused without --force; with it,
// those the new write does not replace are removed once it is in place.
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
#include "ckpt/verify.h"
#include "formats/safetensors_writer.h"

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

class ShardsSink final : public Sink {
public:
  void prepare(const WriteRequest& request) override {
    const std::string& folder = request.shown_as;
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
    ShardPlan shards = plan_shards(items, request.options.max_shard_size);
    if (shards.shards.empty()) {
      throw FormatError("the state dict holds no tensor: no shard to write");
    }
    m_total_size = shards.total_size;
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
    if (count > 1) {
      m_index = hf_index_json(m_total_size, weight_map, {});
      m_weight_map = std::move(weight_map);
    }
    std::vector<std::string> existing = stale_shard_files(folder, ShardFormat::k_safetensors);
    if (!existing.empty() && !request.options.replace) {
      throw Error(folder + ": refusing to overwrite: it holds shards already (" +
                      joined(existing) + "); use --force to replace them",
                  ExitStatus::k_usage);
    }
    std::set<std::string> written(m_files.begin(), m_files.end());
    if (count > 1) {
      written.insert(index_file_name(ShardFormat::k_safetensors));
    }
    for (const std::string& name : existing) {
      if (written.count(name) == 0) {
        m_stale.push_back(name);
      }
    }
  }

  Written write(const WriteRequest& request, OutputFiles& out) override {
    const std::string& folder = request.shown_as;
    Written written;
    uint64_t total = m_index.size();
    for (const SafetensorsFile& shard : m_shards) {
      total += shard.size();
    }
    uint64_t done = 0;
    for (size_t k = 0; k < m_shards.size(); ++k) {
      const SafetensorsFile& shard = m_shards[k];
      std::string path = in_folder(folder, m_files[k]);
      shard.write(out.create(path).fd(), path, request.progress, done, total);
      done += shard.size();
      written.tensors += shard.tensors();
      written.storage_bytes += shard.data_size();
      written.bytes += shard.size();
      written.shards.push_back({m_files[k], shard.entries().size(), shard.size()});
    }
    written.storages = written.tensors;
    if (!m_index.empty()) {
      std::string name = index_file_name(ShardFormat::k_safetensors);
      std::string path = in_folder(folder, name);
      TempFile& index = out.create(path);
      write_text(index.fd(), m_index, path);
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
    for (size_t k = 0; k < m_shards.size(); ++k) {
      VerifyReport shard = m_shards[k].verify(out.files()[k].path(),
                                              in_folder(folder, m_files[k]), device);
      report.tensors += shard.tensors;
      report.storages += shard.storages;
      report.bytes += shard.bytes;
      report.device_checked += shard.device_checked;
    }
    if (!m_index.empty()) {
      verify_index(out.files().back().path(),
                   in_folder(folder, index_file_name(ShardFormat::k_safetensors)));
    }
    return report;
  }

  void after_commit(const WriteRequest& request) override {
    for (const std::string& name : m_stale) {
      std::string path = in_folder(request.shown_as, name);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw Error(path + ": cannot remove the stale shard: " + std::strerror(errno));
      }
      spdlog::warn("{}: removed: a shard of an earlier write (--force)", path);
    }
  }

private:
  static void write_text(int fd, const std::string& text, const std::string& path) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        throw Error(path + ": cannot write: " + std::strerror(n < 0 ? errno : ENOSPC));
      }
      done += static_cast<size_t>(n);
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

  std::vector<SafetensorsFile> m_shards;
  std::vector<std::string> m_files;  // their names in OUT
  std::vector<std::pair<std::string, std::string>> m_weight_map;
  std::string m_index;               // the index's text; empty for one shard
  uint64_t m_total_size = 0;
  std::vector<std::string> m_stale;  // earlier shards the write leaves behind
  std::vector<TiedNames> m_tied;
};

bool claims_nothing(const std::string& /*output*/) { return false; }

std::unique_ptr<Sink> make_shards_sink() { return std::make_unique<ShardsSink>(); }

}  // namespace

extern const SinkFormat k_hf_shards_sink{"safetensors-shards",
                                         "a folder of HuggingFace safetensors shards",
                                         claims_nothing, true, true, make_shards_sink};

}  // namespace ckpt
