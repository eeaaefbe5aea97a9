// `inspect`: a summary of a checkpoint for people and scripts. It reads the
// container and the pickle only; tensor bytes stay on disk.
#include "ckpt/inspect.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <sstream>
#include <tuple>
#include <unordered_set>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/rewrite.h"
#include "ckpt/source.h"
#include "ckpt/tensor.h"
#include "convert/json_path.h"

namespace ckpt {
namespace {

// Names that wrappers leave in keys: leading prefixes and inner components.
void count_wrappers(std::string_view key, std::map<std::string, size_t>& wrappers) {
  for (const char* prefix : {"module.", "_orig_mod.", "_forward_module."}) {
    if (key.rfind(prefix, 0) == 0) {
      ++wrappers[prefix];
    }
  }
  for (const char* component : {"_fsdp_wrapped_module", "_checkpoint_wrapped_module"}) {
    std::string dotted = std::string(".").append(key).append(".");
    if (dotted.find(std::string(".") + component + ".") != std::string::npos) {
      ++wrappers[component];
    }
  }
}

StateDictSummary summarize(const StateDictRef& ref) {
  StateDictSummary summary;
  summary.path = ref.path;
  summary.steps = ref.steps;
  summary.has_metadata = ref.dict->state != nullptr;
  std::unordered_set<const Storage*> storages;
  // Identical views, by storage, byte offset and shape: index into `aliases`.
  std::map<std::tuple<const Storage*, int64_t, Dtype, std::vector<int64_t>, std::vector<int64_t>>,
           size_t>
      views;
  for (const auto& [key, value] : ref.dict->entries) {
    count_wrappers(key->text, summary.wrappers);
    std::optional<TensorRef> tensor = as_tensor(value);
    if (!tensor) {
      continue;
    }
    auto [view, added] = views.try_emplace(
        {tensor->storage, tensor->offset * element_size(tensor->dtype), tensor->dtype,
         tensor->sizes.vec(), tensor->strides.vec()},
        summary.aliases.size());
    if (added) {
      summary.aliases.push_back({});
    }
    summary.aliases[view->second].push_back(key->text.str());
    ++summary.tensors;
    summary.elements += tensor->numel();
    std::string dtype(dtype_name(tensor->dtype));
    ++summary.dtypes[dtype];
    summary.dtype_bytes[dtype] +=
        static_cast<uint64_t>(tensor->numel()) * static_cast<uint64_t>(element_size(tensor->dtype));
    ++summary.locations[tensor->storage->location->text.str()];
    if (storages.insert(tensor->storage).second) {
      summary.bytes += tensor->storage->bytes.size;
    }
  }
  summary.aliases.erase(std::remove_if(summary.aliases.begin(), summary.aliases.end(),
                                       [](const std::vector<std::string>& names) {
                                         return names.size() < 2;
                                       }),
                        summary.aliases.end());
  return summary;
}

template <typename Map>
std::string join_counts(const Map& counts) {
  std::string out;
  for (const auto& [name, count] : counts) {
    out += (out.empty() ? "" : ", ") + name + " ×" + std::to_string(count);
  }
  return out.empty() ? "-" : out;
}

// "float32 ×10 (4000 bytes), int64 ×1 (8 bytes)".
std::string join_dtypes(const StateDictSummary& sd) {
  std::string out;
  for (const auto& [name, count] : sd.dtypes) {
    auto bytes = sd.dtype_bytes.find(name);
    out += (out.empty() ? "" : ", ") + name + " ×" + std::to_string(count) + " (" +
           std::to_string(bytes != sd.dtype_bytes.end() ? bytes->second : 0) + " bytes)";
  }
  return out.empty() ? "-" : out;
}

}  // namespace

InspectReport inspect_checkpoint(const std::string& path, const ReadOptions& options) {
  Checkpoint ckpt = read_checkpoint(path, options);
  for (const std::string& warning : ckpt.warnings) {
    spdlog::warn("{}: {}", path, warning);
  }
  InspectReport report;
  report.path = path;
  report.format = format_name(ckpt);
  report.archive_name = ckpt.fact("archive_name");
  report.version = ckpt.fact("version");
  report.torch_hint = ckpt.fact("torch_hint");
  for (const auto& [name, value] : ckpt.facts) {
    if (name.rfind("metadata.", 0) == 0) {
      report.metadata.emplace_back(name.substr(9), value);
    }
  }
  report.facts = ckpt.facts;
  bool folder = ckpt.format != nullptr && ckpt.format->claims_folder != nullptr;
  if (ckpt.format != nullptr && std::string(ckpt.format->name) == "hf-index") {
    // The first file is the index itself.
    for (auto file = std::next(ckpt.files.begin()); file != ckpt.files.end(); ++file) {
      const std::string& shard = file->path();
      report.shards.push_back(shard.substr(shard.rfind('/') + 1));  // npos + 1 == 0
    }
  } else if (folder) {
    std::string prefix = path.empty() || path.back() == '/' ? path : path + "/";
    for (const MappedFile& file : ckpt.files) {
      const std::string& name = file.path();
      report.shards.push_back(name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name);
      report.file_bytes += file.bytes().size;
    }
  }
  if (!folder) {
    report.file_bytes = ckpt.bytes.size;
  }
  report.pickle_bytes = ckpt.pickle_bytes;
  report.tensors = ckpt.tensors.size();
  // The storages the checkpoint reaches: a sharded training run's files also
  // hold optimizer moments, which no output holds.
  std::unordered_set<const Storage*> reached;
  for (const TensorRef& tensor : ckpt.tensors) {
    if (reached.insert(tensor.storage).second) {
      ++report.storages;
      report.storage_bytes += tensor.storage->bytes.size;
    }
  }
  const Node* root = ckpt.graph.root;
  if (root->kind == NodeKind::k_dict) {
    for (const auto& [key, value] : root->entries) {
      if (key->is_str()) {
        report.top_level_keys.emplace_back(key->text);
      }
    }
  }
  std::optional<PickledModule> model = find_pickled_module(ckpt.graph.root);
  std::string inside_model;  // how the paths of what the model holds start
  if (model) {
    inside_model = (model->path == "(top level)" ? "" : model->path) + ".__dict__";
  }
  try {
    for (const StateDictRef& ref : find_state_dicts(ckpt.graph.root)) {
      // A module's `_parameters` are dicts of tensors too: its state dict
      // below says what they hold.
      if (model && ref.path.rfind(inside_model, 0) == 0) {
        continue;
      }
      report.state_dicts.push_back(summarize(ref));
    }
  } catch (const FormatError& e) {
    throw Error(path + ":" + ckpt.pickle_record + ": " + e.what());
  }
  if (model) {
    report.pickled_module = PickledModuleSummary{model->name, model->module, model->path};
    // What `--extract` would write; a module tree it cannot read leaves
    // this out, and `--extract` says why.
    try {
      Node* dict = module_state_dict(ckpt.graph, model->object);
      report.state_dicts.push_back(
          summarize({dict, "state_dict() of " + model->path, {}, dict->entries.size()}));
      report.state_dicts.back().built = true;
    } catch (const FormatError&) {
    }
  }
  report.globals = list_globals(root);
  return report;
}

std::string format_inspect_text(const InspectReport& r) {
  std::ostringstream out;
  out << r.path << ": " << r.format << " checkpoint, " << r.file_bytes << " bytes ("
      << r.torch_hint << ")\n";
  // A safetensors file has a JSON header where a torch file has its pickle;
  // an HF index, its shards' headers or pickles.
  out << (r.format == "safetensors"                       ? "  header: "
          : r.format == "hf-index"                        ? "  shards' headers or pickles: "
          : r.format == "deepspeed" || r.format == "dcp" ? "  pickles: "
                                                          : "  pickle: ")
      << r.pickle_bytes
      << " bytes; " << r.tensors << " tensors in " << r.storages << " storages, "
      << r.storage_bytes << " bytes\n";
  if (!r.metadata.empty()) {
    std::string entries;
    for (const auto& [name, value] : r.metadata) {
      entries += (entries.empty() ? "" : ", ") + name + ": " + value;
    }
    out << "  __metadata__: " << entries << "\n";
  }
  if (!r.top_level_keys.empty()) {
    // A bare state dict's top level is its keys: thousands of them. The
    // first few tell what it is; --json lists them all.
    constexpr size_t k_shown = 8;
    std::string keys;
    for (size_t i = 0; i < r.top_level_keys.size() && i < k_shown; ++i) {
      keys += (keys.empty() ? "" : ", ") + r.top_level_keys[i];
    }
    if (r.top_level_keys.size() > k_shown) {
      keys += ", … and " + std::to_string(r.top_level_keys.size() - k_shown) + " more (--json lists all)";
    }
    out << "  top-level keys (" << r.top_level_keys.size() << "): " << keys << "\n";
  }
  for (const auto& [name, value] : r.facts) {
    // The facts a sharded training checkpoint tells (the rest are above).
    if (name != "torch_hint" && name != "archive_name" && name != "version" &&
        name.rfind("metadata.", 0) != 0) {
      out << "  " << name << ": " << value << "\n";
    }
  }
  if (!r.shards.empty()) {
    // Thousands of rank files are possible: the first few, then a count.
    constexpr size_t k_shown = 12;
    std::string shards;
    for (size_t i = 0; i < r.shards.size() && i < k_shown; ++i) {
      shards += (shards.empty() ? "" : ", ") + r.shards[i];
    }
    if (r.shards.size() > k_shown) {
      shards += ", … and " + std::to_string(r.shards.size() - k_shown) + " more (--json lists all)";
    }
    out << (r.format == "hf-index" ? "  shards (" : "  files read (") << r.shards.size()
        << "): " << shards << "\n";
  }
  if (const std::optional<PickledModuleSummary>& model = r.pickled_module) {
    out << "  whole pickled model: " << model->module << "." << model->class_name << " at "
        << model->path << "\n";
    out << "    loading it needs its class's code; --extract writes its weights as the state "
           "dict model.state_dict() gives\n";
  }
  for (const StateDictSummary& sd : r.state_dicts) {
    out << "  state dict " << sd.path << ": " << sd.tensors << " tensors, " << sd.elements
        << " elements, " << sd.bytes << " bytes" << (sd.has_metadata ? ", _metadata" : "")
        << "\n";
    out << "    dtypes: " << join_dtypes(sd) << "\n";
    out << "    locations: " << join_counts(sd.locations) << "\n";
    out << "    wrappers: " << join_counts(sd.wrappers) << "\n";
    for (const std::vector<std::string>& names : sd.aliases) {
      out << "    one tensor:";
      for (size_t i = 0; i < names.size(); ++i) {
        out << (i == 0 ? " " : " = ") << names[i];
      }
      out << "\n";
    }
  }
  if (r.state_dicts.empty()) {
    out << "  no state dict found\n";
  }
  out << "  globals:\n";
  for (const GlobalUse& use : r.globals) {
    out << "    " << (use.benign ? "  " : "! ") << use.name
        << (use.benign ? "" : "   (would be imported and may run code in Python; at " +
                                  use.first_path + ")")
        << "\n";
  }
  return out.str();
}

std::string format_inspect_json(const InspectReport& r, int exit_code, const std::string& error) {
  nlohmann::ordered_json json;
  json["schema"] = "ckpt-convert.inspect/1";
  json["status"] = run_status_name(exit_code);
  json["exit_code"] = exit_code;
  json["error"] = error.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(error);
  json["path"] = r.path;
  json["format"] = r.format;
  json["archive_name"] = r.archive_name;
  json["version"] = r.version;
  json["torch_hint"] = r.torch_hint;
  json["file_bytes"] = r.file_bytes;
  json["pickle_bytes"] = r.pickle_bytes;
  json["tensors"] = r.tensors;
  json["storages"] = r.storages;
  json["storage_bytes"] = r.storage_bytes;
  json["top_level_keys"] = r.top_level_keys;
  json["shards"] = r.shards;
  json["facts"] = nlohmann::ordered_json::object();
  for (const auto& [name, value] : r.facts) {
    json["facts"][name] = value;
  }
  json["metadata"] = nlohmann::ordered_json::object();
  for (const auto& [name, value] : r.metadata) {
    json["metadata"][name] = value;
  }
  json["pickled_module"] = nullptr;
  if (const std::optional<PickledModuleSummary>& model = r.pickled_module) {
    json["pickled_module"] = {
        {"class", model->class_name}, {"module", model->module}, {"path", model->path}};
  }
  json["state_dicts"] = nlohmann::ordered_json::array();
  for (const StateDictSummary& sd : r.state_dicts) {
    json["state_dicts"].push_back({{"path", sd.built ? nlohmann::ordered_json(nullptr)
                                                     : path_json(sd.steps)},
                                   {"name", sd.path},
                                   {"tensors", sd.tensors},
                                   {"elements", sd.elements},
                                   {"bytes", sd.bytes},
                                   {"has_metadata", sd.has_metadata},
                                   {"dtypes", sd.dtypes},
                                   {"dtype_bytes", sd.dtype_bytes},
                                   {"locations", sd.locations},
                                   {"wrappers", sd.wrappers},
                                   {"aliases", sd.aliases}});
  }
  json["globals"] = nlohmann::ordered_json::array();
  for (const GlobalUse& use : r.globals) {
    json["globals"].push_back({{"name", use.name},
                               {"first_path", use.first_path},
                               {"runs_code", !use.benign}});
  }
  // Names and keys come from the file and need not be UTF-8: invalid bytes
  // become U+FFFD rather than a json::type_error.
  return json.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace ckpt
