// The conversion report in its three forms: a summary for people (stderr), a
// diff of the keys (`--dry-run`), and JSON (`--json`, docs/report.schema.json).
#include <nlohmann/json.hpp>

#include <cstdio>

#include "ckpt/convert.h"
#include "ckpt/error.h"
#include "convert/json_path.h"

namespace ckpt {
namespace {

std::string count(size_t n, const char* singular, const char* plural) {
  return std::to_string(n) + " " + (n == 1 ? singular : plural);
}

std::string megabytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return text;
}

// One line per file of a folder output: `    <file>: N names, B bytes`.
std::string shard_lines(const ConvertReport& r) {
  std::string out;
  for (const ShardWritten& shard : r.shards) {
    out += "    " + shard.file + ": " + count(shard.tensors, "name", "names") + ", " +
           std::to_string(shard.bytes) + " bytes\n";
  }
  return out;
}

}  // namespace

std::string format_report_text(const ConvertReport& r) {
  std::string out = r.input + (r.output.empty() ? "" : " -> " + r.output) +
                    (r.dry_run ? " (dry run)" : "") + "\n";
  std::string paths;
  for (const StateDictChange& sd : r.rewrite.state_dicts) {
    paths += (paths.empty() ? "" : ", ") + sd.path;
  }
  out += "  state dicts: " + std::to_string(r.rewrite.state_dicts.size()) +
         (paths.empty() ? " (no keys rewritten)" : ": " + paths) + "\n";
  out += "  keys: " + std::to_string(r.rewrite.renamed) + " renamed, " +
         std::to_string(r.rewrite.dropped) + " dropped, " +
         std::to_string(r.rewrite.unchanged) + " unchanged\n";
  for (size_t i = 0; i < r.rules.size(); ++i) {
    size_t matches = i < r.rewrite.rule_matches.size() ? r.rewrite.rule_matches[i] : 0;
    std::string note = i < r.rule_notes.size() ? r.rule_notes[i] : "";
    out += "  rule " + r.rules[i].describe() + " (" + r.rules[i].origin + "): " +
           count(matches, "key", "keys") + (note.empty() ? "" : " (" + note + ")") + "\n";
  }
  if (!r.left_out.empty()) {
    std::string keys;
    for (const std::string& key : r.left_out) {
      keys += (keys.empty() ? "" : ", ") + key;
    }
    out += "  left out (" + r.output_format + " holds the model's state dict only): " + keys + "\n";
  }
  if (!r.dtype.empty()) {
    out += "  dtype: floating-point tensors written as " + r.dtype + "\n";
  }
  for (const TiedNames& tied : r.tied) {
    std::string aliases;
    for (const std::string& alias : tied.aliases) {
      aliases += (aliases.empty() ? "" : ", ") + alias;
    }
    out += "  tied: " + aliases + " = " + tied.kept +
           (tied.deduplicated ? " (written once; recorded as aliases)"
                              : " (each written; --tied dedupe writes one)") + "\n";
  }
  if (r.dry_run && !r.shards.empty()) {
    out += "  would write " + count(r.shards.size(), "file", "files") + ":\n" + shard_lines(r);
  }
  if (r.written) {
    out += "  written: " + count(r.tensors, "tensor", "tensors") + " in " +
           count(r.storages, "storage", "storages") + " (" + megabytes(r.storage_bytes) +
           "), " + std::to_string(r.bytes_written) + " bytes" +
           (r.output_format == "pt" ? "" : " of " + r.output_format) + "\n";
    out += shard_lines(r);
    if (r.verified) {
      out += "  verified: " + count(r.verified->tensors, "tensor", "tensors") + ", " +
             megabytes(r.verified->bytes) + " compared; " +
             std::to_string(r.verified->device_checked) + " loaded on " + r.verified->device +
             "\n";
    } else {
      out += "  not verified (--no-verify)\n";
    }
  }
  return out;
}

std::string format_mapping_diff(const ConvertReport& r) {
  std::string out;
  std::string current;
  for (const KeyMapping& m : r.rewrite.mapping) {
    if (m.new_key && *m.new_key == m.old_key) {
      continue;
    }
    if (m.state_dict != current) {
      current = m.state_dict;
      out += "@@ state dict " + current + " @@\n";
    }
    out += "- " + m.old_key + (m.new_key ? "\n+ " + *m.new_key + "\n" : "   (dropped)\n");
  }
  return out;
}

std::string format_report_json(const ConvertReport& r) {
  using json = nlohmann::ordered_json;  // fields in the schema's order
  json out;
  out["schema"] = "ckpt-convert.report/2";
  out["status"] = run_status_name(r.exit_code);
  out["exit_code"] = r.exit_code;
  out["error"] = r.error.empty() ? json(nullptr) : json(r.error);
  out["input"] = r.input;
  out["output"] = r.output;
  out["dry_run"] = r.dry_run;
  out["format"] = r.format.empty() ? json(nullptr) : json(r.format);
  out["output_format"] = r.output_format.empty() ? json(nullptr) : json(r.output_format);
  out["dtype"] = r.dtype.empty() ? json(nullptr) : json(r.dtype);
  out["left_out"] = r.left_out;
  out["shards"] = json::array();
  for (const ShardWritten& shard : r.shards) {
    out["shards"].push_back(
        {{"file", shard.file}, {"names", shard.tensors}, {"bytes", shard.bytes}});
  }
  out["tied"] = json::array();
  for (const TiedNames& tied : r.tied) {
    out["tied"].push_back(
        {{"kept", tied.kept}, {"aliases", tied.aliases}, {"deduplicated", tied.deduplicated}});
  }
  out["rules"] = json::array();
  for (size_t i = 0; i < r.rules.size(); ++i) {
    size_t matches = i < r.rewrite.rule_matches.size() ? r.rewrite.rule_matches[i] : 0;
    std::string note = i < r.rule_notes.size() ? r.rule_notes[i] : "";
    out["rules"].push_back({{"rule", r.rules[i].describe()},
                            {"origin", r.rules[i].origin},
                            {"matches", matches},
                            {"note", note.empty() ? json(nullptr) : json(note)}});
  }
  out["state_dicts"] = json::array();
  for (const StateDictChange& sd : r.rewrite.state_dicts) {
    out["state_dicts"].push_back({{"path", path_json(sd.steps)},
                                  {"name", sd.path},
                                  {"keys", sd.keys},
                                  {"renamed", sd.renamed},
                                  {"dropped", sd.dropped},
                                  {"unchanged", sd.unchanged}});
  }
  out["mapping"] = json::array();
  for (const KeyMapping& m : r.rewrite.mapping) {
    out["mapping"].push_back({{"state_dict", m.state_dict},
                              {"old", m.old_key},
                              {"new", m.new_key ? json(*m.new_key) : json(nullptr)}});
  }
  out["warnings"] = r.warnings;
  out["globals"] = json::array();
  for (const GlobalUse& use : r.globals) {
    out["globals"].push_back({{"name", use.name}, {"runs_code", !use.benign}});
  }
  out["tensors"] = r.tensors;
  out["storages"] = r.storages;
  out["storage_bytes"] = r.storage_bytes;
  out["bytes_written"] = r.written ? r.bytes_written : 0;
  if (r.verified) {
    out["verification"] = {{"device", r.verified->device},
                           {"tensors", r.verified->tensors},
                           {"storages", r.verified->storages},
                           {"bytes", r.verified->bytes},
                           {"device_checked", r.verified->device_checked}};
  } else {
    out["verification"] = nullptr;
  }
  out["timings"] = {{"read", r.seconds.read},
                    {"rewrite", r.seconds.rewrite},
                    {"write", r.seconds.write},
                    {"verify", r.seconds.verify},
                    {"total", r.seconds.total}};
  // Keys may hold any bytes; replace invalid UTF-8 rather than fail.
  return out.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace ckpt
