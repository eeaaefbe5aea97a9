// This file runs the checks of `ckpt-convert check` on one checkpoint and
// reports every problem it finds, not just the first: a CI log should say
// all that is wrong in one run. It also formats what a run over several
// files prints: each file's line, the closing summary, the JSON object.
//
// The state dict is found as `--extract` finds it, and compared with the
// expected keys as `load_state_dict(strict=True)` compares them (missing,
// unexpected, size mismatch; not dtypes, which it casts). A file whose every
// key carries one wrapper prefix gets one line saying to convert it first. The other checks read the checkpoint in
// place: wrapper prefixes in the keys, NaN/Inf in the tensors' bytes, the
// dtypes, the CRC-32 of every storage record, and the globals a Python
// unpickler would import. Only a device other than the CPU loads LibTorch
// (through the plugin), to copy every tensor there and back.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_set>

#include "ckpt/check.h"
#include "ckpt/checkpoint.h"
#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/globals.h"
#include "ckpt/location.h"
#include "ckpt/mapped_file.h"
#include "ckpt/rewrite.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

std::string quoted(const std::string& key) { return "'" + key + "'"; }

std::string shape_text(const std::vector<int64_t>& sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(sizes[i]);
  }
  return out + "]";
}

std::string index_text(const std::vector<int64_t>& index) {
  return index.empty() ? "[]" : shape_text(index);
}

// The wrapper names a key still carries: leading `module.`, `_orig_mod.`,
// `_forward_module.`; the components `_fsdp_wrapped_module` and
// `_checkpoint_wrapped_module` anywhere (what `inspect` reports).
std::vector<std::string> wrappers_in(const std::string& key) {
  std::vector<std::string> found;
  for (const char* prefix : {"module.", "_orig_mod.", "_forward_module."}) {
    if (key.rfind(prefix, 0) == 0) {
      found.emplace_back(prefix);
    }
  }
  std::string dotted = "." + key + ".";
  for (const char* component : {"_fsdp_wrapped_module", "_checkpoint_wrapped_module"}) {
    if (dotted.find(std::string(".") + component + ".") != std::string::npos) {
      found.emplace_back(component);
    }
  }
  return found;
}

// The wrapper prefix every key starts with (`module.`, `_orig_mod.`,
// `_forward_module.`, `_fsdp_wrapped_module.`, `_checkpoint_wrapped_module.`),
// or empty: a file saved from a wrapped model.
std::string common_wrapper_prefix(const std::vector<std::string>& keys) {
  if (keys.empty()) {
    return "";
  }
  for (const char* prefix : {"module.", "_orig_mod.", "_forward_module.", "_fsdp_wrapped_module.",
                             "_checkpoint_wrapped_module."}) {
    if (std::all_of(keys.begin(), keys.end(),
                    [&](const std::string& key) { return key.rfind(prefix, 0) == 0; })) {
      return prefix;
    }
  }
  return "";
}

// `path` as a shell word: quoted when it holds anything but plain characters.
std::string shell_word(const std::string& path) {
  if (!path.empty() && path.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789_./=+-:@,%") == std::string::npos) {
    return path;
  }
  std::string out = "'";
  for (char c : path) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

// The one problem for a file whose every key carries `prefix`: what wrapped
// the model, and the conversion that removes it.
std::string wrapper_hint(const std::string& path, const std::string& prefix) {
  std::string what = prefix == "module."                ? "a DataParallel/DDP wrapper"
                     : prefix == "_orig_mod."             ? "a torch.compile wrapper"
                     : prefix == "_forward_module."       ? "a Lightning Fabric wrapper"
                     : prefix == "_fsdp_wrapped_module."  ? "an FSDP wrapper"
                                                          : "an activation-checkpoint wrapper";
  std::string command = "ckpt-convert " + shell_word(path) + " OUT";
  if (prefix == "_forward_module.") {
    command += " --strip _forward_module.";  // not in the default preset `unwrap`
  }
  return "every key starts with '" + prefix + "' (" + what + "): convert first: " + command;
}

// Where `dict` sits under `root`, for the report.
std::string path_of(const Node* root, const Node* dict) {
  if (root == dict) {
    return "(top level)";
  }
  for (const auto& [key, value] : root->entries) {
    if (value == dict && key->is_str()) {
      return "[\"" + key->text + "\"]";
    }
  }
  return "(found)";
}

struct Entry {
  std::string key;
  std::optional<TensorRef> tensor;
};

class Checker {
public:
  Checker(const CheckOptions& options, CheckReport& report) : m_options(options), m_report(report) {}

  void add(CheckProblemKind kind, const std::string& key, const std::string& message) {
    m_report.problems.push_back({kind, key, message});
  }

  void compare_keys(const std::vector<Entry>& entries, const ExpectedKeys& expected) {
    std::map<std::string, const Entry*> present;
    for (const Entry& entry : entries) {
      present.emplace(entry.key, &entry);
    }
    std::set<std::string> wanted;
    for (const ExpectedEntry& want : expected.entries) {
      wanted.insert(want.key);
      if (present.count(want.key) == 0) {
        add(CheckProblemKind::k_missing, want.key,
            "missing key " + quoted(want.key) +
                (want.sizes ? " (expected shape " + shape_text(*want.sizes) + ")" : ""));
      }
    }
    for (const Entry& entry : entries) {
      if (wanted.count(entry.key) == 0) {
        add(CheckProblemKind::k_unexpected, entry.key, "unexpected key " + quoted(entry.key));
      }
    }
    for (const ExpectedEntry& want : expected.entries) {
      auto found = present.find(want.key);
      if (found == present.end() || !want.sizes) {
        continue;
      }
      const Entry& have = *found->second;
      if (!have.tensor) {
        add(CheckProblemKind::k_shape, want.key,
            quoted(want.key) + " is not a tensor, expected one of shape " + shape_text(*want.sizes));
      } else if (have.tensor->sizes != *want.sizes) {
        add(CheckProblemKind::k_shape, want.key,
            "size mismatch for " + quoted(want.key) + ": " + shape_text(have.tensor->sizes.vec()) +
                " in the file, " + shape_text(*want.sizes) + " expected");
      }
    }
    // No dtype comparison: load_state_dict copies with a cast (`--dtype` asks for one).
  }

  void check_dtype(const std::vector<Entry>& entries, Dtype dtype) {
    for (const Entry& entry : entries) {
      if (entry.tensor && is_floating_dtype(entry.tensor->dtype) && entry.tensor->dtype != dtype) {
        add(CheckProblemKind::k_dtype, entry.key,
            "dtype mismatch for " + quoted(entry.key) + ": " +
                std::string(dtype_name(entry.tensor->dtype)) + ", expected " +
                std::string(dtype_name(dtype)) + " (--dtype)");
      }
    }
  }

  void check_wrappers(const std::vector<Entry>& entries) {
    for (const Entry& entry : entries) {
      std::vector<std::string> found = wrappers_in(entry.key);
      if (found.empty()) {
        continue;
      }
      std::string names;
      for (const std::string& name : found) {
        names += (names.empty() ? "" : ", ") + name;
      }
      add(CheckProblemKind::k_wrapper, entry.key,
          "wrapper prefix left in " + quoted(entry.key) + ": " + names);
    }
  }

  void check_finite(const std::vector<Entry>& entries) {
    for (const Entry& entry : entries) {
      if (!entry.tensor) {
        continue;
      }
      NonFinite found = count_non_finite(*entry.tensor);
      if (found.nan + found.inf == 0) {
        continue;
      }
      std::string counts;
      if (found.nan != 0) {
        counts = std::to_string(found.nan) + " NaN";
      }
      if (found.inf != 0) {
        counts += (counts.empty() ? "" : " and ") + std::to_string(found.inf) + " Inf";
      }
      add(CheckProblemKind::k_non_finite, entry.key,
          quoted(entry.key) + " holds " + counts + " among " +
              std::to_string(entry.tensor->numel()) + " values (first at " +
              index_text(found.first) + ")");
    }
  }

  void check_records(const Checkpoint& checkpoint) {
    for (const Storage& storage : checkpoint.graph.storages()) {
      if (!storage.has_crc32) {
        continue;
      }
      ++m_report.storages_crc_checked;
      ByteSpan bytes = storage_bytes(storage).bytes;
      uint32_t crc = crc32_update(0, bytes.data, bytes.size);
      release_pages(bytes);  // a large file need not stay resident
      if (crc != storage.crc32) {
        // A checkpoint of several files (an HF index) names the file and
        // record in the key itself.
        add(CheckProblemKind::k_corrupt, "",
            std::string("record ") + (checkpoint.storage_records.empty() ? "" : "data/") +
                storage.key +
                ": its bytes do not match the CRC-32 in the archive (the file is damaged)");
      }
    }
    // A run folder's records that the state dict is consolidated from.
    for (const PieceSource& source : checkpoint.piece_sources) {
      ++m_report.storages_crc_checked;
      if (!piece_source_intact(source)) {
        add(CheckProblemKind::k_corrupt, "",
            "record " + source.record +
                ": its bytes do not match the CRC-32 in the archive (the file is damaged)");
      }
    }
  }

  void check_globals(const Node* root) {
    for (const GlobalUse& use : list_globals(root)) {
      const std::vector<std::string>& allowed = m_options.allowed_globals;
      if (!use.benign && std::find(allowed.begin(), allowed.end(), use.name) == allowed.end()) {
        add(CheckProblemKind::k_global, "",
            "global " + use.name + " (at " + use.first_path +
                ") would be imported, and may run code, by torch.load without weights_only");
      }
    }
  }

  // Every storage of the file, as torch.load restores them all: a tag it
  // cannot restore here fails the load without `map_location`.
  void check_locations(const Checkpoint& checkpoint) {
    std::set<std::string> seen;
    for (const Storage& storage : checkpoint.graph.storages()) {
      std::string tag = storage.location != nullptr ? storage.location->text.str() : "";
      if (!seen.insert(tag).second) {
        continue;
      }
      std::string why = location_unavailable_here(tag);
      if (!why.empty()) {
        add(CheckProblemKind::k_location, "",
            why + " (convert with --location cpu, or load with map_location)");
      }
    }
  }

  void check_device(const std::vector<Entry>& entries) {
    for (const Entry& entry : entries) {
      if (!entry.tensor || entry.tensor->quantized || entry.tensor->byte_extent() == 0) {
        continue;
      }
      std::string why = round_trip(m_options.device, *entry.tensor, *entry.tensor);
      if (!why.empty()) {
        add(CheckProblemKind::k_device, entry.key, quoted(entry.key) + " " + why);
      } else {
        ++m_report.device_checked;
      }
    }
  }

private:
  const CheckOptions& m_options;
  CheckReport& m_report;
};

}  // namespace

const char* check_problem_name(CheckProblemKind kind) {
  switch (kind) {
    case CheckProblemKind::k_missing: return "missing";
    case CheckProblemKind::k_unexpected: return "unexpected";
    case CheckProblemKind::k_shape: return "shape";
    case CheckProblemKind::k_dtype: return "dtype";
    case CheckProblemKind::k_wrapper: return "wrapper";
    case CheckProblemKind::k_non_finite: return "non_finite";
    case CheckProblemKind::k_global: return "global";
    case CheckProblemKind::k_corrupt: return "corrupt";
    case CheckProblemKind::k_device: return "device";
    case CheckProblemKind::k_location: return "location";
  }
  return "unknown";
}

const std::vector<CheckProblemKind>& check_problem_kinds() {
  static const std::vector<CheckProblemKind> k_kinds = {
      CheckProblemKind::k_missing, CheckProblemKind::k_unexpected, CheckProblemKind::k_shape,
      CheckProblemKind::k_dtype,   CheckProblemKind::k_wrapper,    CheckProblemKind::k_non_finite,
      CheckProblemKind::k_global,  CheckProblemKind::k_corrupt,    CheckProblemKind::k_device,
      CheckProblemKind::k_location,
  };
  return k_kinds;
}

CheckReport check_checkpoint(const CheckOptions& options) {
  Clock::time_point start = Clock::now();
  CheckReport report;
  report.path = options.path;
  report.device = options.device;
  bool on_cpu = is_cpu_device(options.device);
  if (!on_cpu) {
    require_device(options.device);
  }
  if (options.expected) {
    report.expected_source = options.expected->source;
    report.expected = options.expected->entries.size();
  }
  Checkpoint checkpoint = read_checkpoint(options.path);
  report.format = format_name(checkpoint);
  for (const std::string& warning : checkpoint.warnings) {
    spdlog::warn("{}: {}", options.path, warning);
  }

  Node* dict = nullptr;
  std::vector<Entry> entries;
  try {
    dict = find_model_state_dict(checkpoint.graph, options.state_dict_key);
    for (const auto& [key, value] : dict->entries) {
      Entry entry;
      entry.key = key->is_str() ? key->text.str() : "(a key that is not a string)";
      entry.tensor = as_tensor(value);
      entries.push_back(std::move(entry));
    }
  } catch (const FormatError& e) {
    std::string why = e.what();
    size_t hint = why.find("--extract=KEY");
    if (hint != std::string::npos) {
      why.replace(hint, 13, "--key KEY");
    }
    throw Error(options.path + ":" + checkpoint.pickle_record + ": " + why);
  }
  report.state_dict = path_of(checkpoint.graph.root, dict);
  report.keys = entries.size();
  std::unordered_set<const Storage*> storages;
  for (const Entry& entry : entries) {
    if (entry.tensor) {
      ++report.tensors;
      if (storages.insert(entry.tensor->storage).second) {
        report.bytes += entry.tensor->storage->bytes.size;
      }
    }
  }

  // A file saved from a wrapped model: one line saying so, not one per key
  // (wrappers) or two per key (every key missing and unexpected).
  std::vector<std::string> keys;
  for (const Entry& entry : entries) {
    keys.push_back(entry.key);
  }
  std::string prefix = common_wrapper_prefix(keys);
  bool wrapped_model_expected = false;  // the expected keys carry the prefix too (add-module)
  if (options.expected && !prefix.empty()) {
    std::vector<std::string> wanted;
    for (const ExpectedEntry& want : options.expected->entries) {
      wanted.push_back(want.key);
    }
    wrapped_model_expected = common_wrapper_prefix(wanted) == prefix;
  }
  bool hint = !prefix.empty() &&
              (options.no_wrapper_prefixes || (options.expected && !wrapped_model_expected));

  Checker checker(options, report);
  if (hint) {
    checker.add(CheckProblemKind::k_wrapper, "", wrapper_hint(options.path, prefix));
  }
  if (options.expected && (!hint || wrapped_model_expected)) {
    checker.compare_keys(entries, *options.expected);
    report.checks.push_back("keys and shapes as in " + options.expected->source);
  }
  if (options.dtype) {
    checker.check_dtype(entries, *options.dtype);
    report.checks.push_back("floating-point tensors " + std::string(dtype_name(*options.dtype)));
  }
  if (options.no_wrapper_prefixes) {
    if (!hint) {
      checker.check_wrappers(entries);
    }
    report.checks.push_back("no wrapper prefixes");
  }
  if (options.finite) {
    checker.check_finite(entries);
    report.checks.push_back("no NaN or Inf");
  }
  checker.check_records(checkpoint);
  report.checks.push_back(std::to_string(report.storages_crc_checked) + " records CRC-32 checked");
  checker.check_globals(checkpoint.graph.root);
  report.checks.push_back("no globals that run code");
  checker.check_locations(checkpoint);
  report.checks.push_back("locations restorable here");
  if (!on_cpu) {
    checker.check_device(entries);
    report.checks.push_back("loaded on " + options.device);
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return report;
}

std::string check_failure_message(const CheckReport& report) {
  std::string out;
  for (const CheckProblem& problem : report.problems) {
    out += (out.empty() ? "" : "\n") + report.path + ": " + problem.message;
  }
  return out;
}

ExitStatus check_exit_status(const std::vector<CheckReport>& reports) {
  bool unreadable = false;
  for (const CheckReport& r : reports) {
    if (!r.problems.empty()) {
      return ExitStatus::k_verify_failed;
    }
    unreadable = unreadable || !r.checked();
  }
  return unreadable ? ExitStatus::k_bad_input : ExitStatus::k_ok;
}

std::string format_check_text(const CheckReport& r) {
  char bytes[32];
  std::snprintf(bytes, sizeof bytes, "%.1f MB", static_cast<double>(r.bytes) / 1e6);
  std::string out = r.path + ": " + (r.passed() ? "check passed" : "check failed") +
                    " (state dict " + r.state_dict + ", " + std::to_string(r.keys) + " keys, " +
                    std::to_string(r.tensors) + " tensors, " + bytes + ")";
  for (size_t i = 0; i < r.checks.size(); ++i) {
    out += (i == 0 ? ": " : ", ") + r.checks[i];
  }
  if (!r.passed()) {
    out += "; " + std::to_string(r.problems.size()) + " problem(s)";
  }
  return out + "\n";
}

namespace {

struct Tally {
  size_t passed = 0;
  size_t failed = 0;      // checked, with problems
  size_t unreadable = 0;  // not checked
  std::map<CheckProblemKind, size_t> kinds;
};

Tally tally(const std::vector<CheckReport>& reports) {
  Tally t;
  for (const CheckReport& r : reports) {
    if (!r.checked()) {
      ++t.unreadable;
    } else if (r.problems.empty()) {
      ++t.passed;
    } else {
      ++t.failed;
    }
    for (const CheckProblem& problem : r.problems) {
      ++t.kinds[problem.kind];
    }
  }
  return t;
}

}  // namespace

std::string format_check_summary(const std::vector<CheckReport>& reports) {
  Tally t = tally(reports);
  std::string out = "check: " + std::to_string(reports.size()) +
                    (reports.size() == 1 ? " file, " : " files, ") + std::to_string(t.passed) +
                    " passed, " + std::to_string(t.failed) + " failed";
  if (t.unreadable != 0) {
    out += ", " + std::to_string(t.unreadable) + " unreadable";
  }
  const char* separator = ": ";
  for (CheckProblemKind kind : check_problem_kinds()) {
    auto count = t.kinds.find(kind);
    if (count != t.kinds.end()) {
      out += separator + std::to_string(count->second) + " " + check_problem_name(kind);
      separator = ", ";
    }
  }
  return out + "\n";
}

std::string format_check_json(const std::vector<CheckReport>& reports, int exit_code,
                              const std::string& error) {
  using json = nlohmann::ordered_json;
  auto text_or_null = [](const std::string& text) { return text.empty() ? json(nullptr) : json(text); };
  Tally t = tally(reports);
  json out;
  out["schema"] = "ckpt-convert.check/2";
  out["status"] = run_status_name(exit_code);
  out["exit_code"] = exit_code;
  out["error"] = text_or_null(error);
  json counts = json::object();
  for (CheckProblemKind kind : check_problem_kinds()) {
    auto count = t.kinds.find(kind);
    counts[check_problem_name(kind)] = count == t.kinds.end() ? 0 : count->second;
  }
  out["summary"] = {{"files", reports.size()},
                    {"passed", t.passed},
                    {"failed", t.failed},
                    {"unreadable", t.unreadable},
                    {"problems", counts}};
  out["files"] = json::array();
  double seconds = 0;
  for (const CheckReport& r : reports) {
    json file;
    file["file"] = r.path;
    file["status"] = !r.checked() ? "unreadable" : r.passed() ? "passed" : "failed";
    file["error"] = text_or_null(r.error);
    file["format"] = text_or_null(r.format);
    file["state_dict"] = text_or_null(r.state_dict);
    file["device"] = r.device;
    file["expected_source"] = text_or_null(r.expected_source);
    file["expected_keys"] = r.expected;
    file["keys"] = r.keys;
    file["tensors"] = r.tensors;
    file["bytes"] = r.bytes;
    file["records_crc_checked"] = r.storages_crc_checked;
    file["device_checked"] = r.device_checked;
    file["checks"] = r.checks;
    file["problems"] = json::array();
    for (const CheckProblem& problem : r.problems) {
      file["problems"].push_back({{"kind", check_problem_name(problem.kind)},
                                  {"key", text_or_null(problem.key)},
                                  {"message", problem.message}});
    }
    file["seconds"] = r.seconds;
    seconds += r.seconds;
    out["files"].push_back(std::move(file));
  }
  out["seconds"] = seconds;
  // Keys are bytes: what is not UTF-8 is shown as U+FFFD.
  return out.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace ckpt
