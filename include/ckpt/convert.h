// The conversion: read, rewrite, write to a temporary file, verify, rename.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/globals.h"
#include "ckpt/rewrite.h"
#include "ckpt/rules.h"
#include "ckpt/sink.h"
#include "ckpt/checkpoint.h"
#include "ckpt/verify.h"

namespace ckpt {

struct ConvertOptions {
  std::string input;
  std::string output;
  std::string device = "cpu";    // where verification loads the tensors
  std::string location = "cpu";  // tag written on every storage; `keep` keeps the input's
  Rules rules = Rules::preset("unwrap");
  bool extract = false;          // write only the model's state dict
  std::optional<std::string> extract_key;
  bool dry_run = false;
  bool force = false;            // replace an existing OUT
  bool verify = true;
  bool require_match = false;    // a rule of the user's that matches no key is an error
  std::vector<std::string> allowed_globals;
  std::string format;            // the output format (sink.h); "" = chosen by OUT's name
  SinkOptions sink;              // --tied, --keep-tied, --dtype
  ReadOptions read;              // --tag
  ProgressFn progress;           // optional
};

struct StageTimes {
  double read = 0;
  double rewrite = 0;
  double write = 0;
  double verify = 0;
  double total = 0;
};

struct ConvertReport {
  std::string input;
  std::string output;
  bool dry_run = false;
  std::string format;                 // input container: zip or legacy; empty if unread
  std::string output_format;          // the sink's name: pt, safetensors
  std::string dtype;                  // what floating tensors were cast to; "" = kept
  std::vector<Rule> rules;
  RewriteReport rewrite;
  std::vector<std::string> rule_notes;  // per rule: empty, or `already done by preset unwrap`
  std::vector<std::string> warnings;
  std::vector<GlobalUse> globals;     // every global the input names
  std::vector<std::string> left_out;  // top-level keys not written (a state-dict-only format)
  std::vector<TiedNames> tied;        // names whose bytes overlap, and what was done
  std::vector<ShardWritten> shards;   // `--max-shard-size`: the files written, index last
  size_t tensors = 0;                 // tensors written
  size_t storages = 0;                // storages written
  uint64_t storage_bytes = 0;
  uint64_t bytes_written = 0;         // size of OUT
  bool written = false;
  std::optional<VerifyReport> verified;
  StageTimes seconds;
  // Set by the caller when the conversion failed.
  int exit_code = 0;
  std::string error;
};

// Converts `options.input` into `options.output` (into
// `options.output/<name of input>` when that is a folder, as `cp` does),
// filling `report` as it goes (so that on error it still tells what was done;
// `report.output` is the file written). Throws `Error` (usage) first for a
// `location` torch cannot restore (see location.h). OUT appears only
// complete and verified (written beside it under a temporary name, then
// renamed); on any error nothing is left behind. Throws `Error` with the
// exit status.
void convert(const ConvertOptions& options, ConvertReport& report);

// The report for people (stderr), as a diff of the keys (`--dry-run`), and as
// the JSON object of docs/report.schema.json (`--json`).
std::string format_report_text(const ConvertReport& report);
std::string format_mapping_diff(const ConvertReport& report);
std::string format_report_json(const ConvertReport& report);

}  // namespace ckpt
