// Batch conversion over a model zoo: many inputs, one set of options, an
// output tree that mirrors the input tree, resumable, shardable across
// machines, one JSON Lines record per input.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/convert.h"

namespace ckpt {

// A stable share of a file list: shard `index` of `count` (0 ≤ index < count).
struct Shard {
  uint32_t index = 0;
  uint32_t count = 1;
};

// Parses `I/N` (`--shard`). Throws `Error` (usage) for anything else, or an
// `I` not below `N`.
Shard parse_shard(const std::string& text);

// Parses a byte count as coreutils and huggingface_hub write them, case
// insensitive: `100000`; `512M`, `1.5G`, `1GiB`, `64KiB` in powers of 1024;
// `5GB`, `500MB` in powers of 1000. Throws `Error` (usage) naming `option`
// otherwise.
uint64_t parse_byte_size(const std::string& option, const std::string& text);

// True when `relative` (a path relative to its root, `/`-separated) falls in
// shard `shard`: an FNV-1a hash of the path, so every machine that lists the
// same tree agrees, whatever its mount point, and a file keeps its shard when
// others are added.
bool in_shard(const std::string& relative, const Shard& shard);

// One input of a batch.
struct BatchInput {
  std::string input;     // the path as found (SRC joined with the relative path)
  std::string relative;  // where its output goes under OUTDIR (`batch_output_name`)
  uint64_t size = 0;     // bytes (a shard folder: its files'), when it could be stat'ed
  std::string error;     // why it cannot be converted (e.g. it does not exist), or empty
  bool folder = false;   // a folder read as one state dict: HF shards, a DeepSpeed run, a DCP folder
};

// The default patterns of `--glob`: `*.pth`, `*.pth.tar`, `*.pt`, `*.bin`,
// `*.ckpt`, `*.safetensors`.
std::vector<std::string> default_batch_globs();

// What a batch writes, which its outputs' names follow.
struct BatchNaming {
  std::string format = "pt";  // the sink's name (sink.h): pt, safetensors
  bool sharded = false;       // `--max-shard-size`: every output is a folder of shards
};

// The name under OUTDIR of the output of the input at `relative` (`folder`:
// a shard folder), `/`-separated:
// - `naming.sharded`: the folder `relative` without its extension (`a/b.pth`
//   → `a/b`; a shard folder keeps its name);
// - pt: a file keeps its name (`a.pth.tar`, `w.bin`), but `x.safetensors` →
//   `x.pth`; a shard folder `f` → `f.pth`;
// - safetensors: the name without its extension, then `.safetensors`
//   (`a/b.pth.tar` → `a/b.safetensors`); a shard folder `f` → `f.safetensors`.
// The extension removed is the checkpoint one the name ends with (`.pth.tar`,
// `.pth`, `.pt`, `.bin`, `.ckpt`, `.safetensors`), else the last one.
std::string batch_output_name(const std::string& relative, bool folder, const BatchNaming& naming);

// `globs` as one line, separated by spaces.
std::string join_globs(const std::vector<std::string>& globs);

// The folder under OUTDIR that holds the sidecars, never walked for inputs.
inline constexpr const char* k_records_folder = ".ckpt-convert";

// Told of each file or folder a walk passes over (`path`) and why (`reason`).
using SkipCallback = std::function<void(const std::string& path, const std::string& reason)>;

// Lists the inputs named by `sources`, sorted by `relative`:
// - a directory is walked recursively (following no directory symlinks);
//   each regular file whose name matches one of `globs` (fnmatch; a pattern
//   holding `/` is matched against the path relative to the directory) is
//   taken, and goes to OUTDIR/<its path relative to the directory>. The
//   folder `skip_dir` (OUTDIR) and folders named `.ckpt-convert` (the
//   sidecars of an output tree) are never entered. A folder holding an HF
//   shard index (`holds_hf_index`) is one input, taken when `globs` match
//   one of its files, and nothing inside it is taken on its own; so is a
//   run folder a folder format claims (a DeepSpeed run, a DCP checkpoint:
//   `folder_format`), taken whatever `globs` say. `on_skip`, when set, is
//   told of every entry passed over and why.
// - a file, or a shard folder, goes to OUTDIR/<its name>, whatever its name.
// - `@FILE` reads a manifest: one path a line, blank lines and `#` comments
//   skipped; `@-` reads standard input. Relative paths are taken from the
//   manifest's folder (the current folder for `@-`), and such a file goes to
//   OUTDIR/<the path as written>; a directory line is walked as above.
// Each input's `relative` is then its output's name (`batch_output_name`
// with `naming`). A path that does not exist becomes an input with `error` set. The same
// file named twice is kept once. Throws `Error` (usage) listing every pair of
// different inputs that would be written to the same output, and `Error`
// (bad input) for an unreadable manifest or directory.
std::vector<BatchInput> collect_batch_inputs(const std::vector<std::string>& sources,
                                             const std::vector<std::string>& globs,
                                             const std::string& skip_dir,
                                             const SkipCallback& on_skip = {},
                                             const BatchNaming& naming = {});

// What became of one input.
enum class BatchStatus { k_converted, k_skipped, k_failed, k_dry_run };

const char* batch_status_name(BatchStatus status);

// A rule of a conversion: as written, where it came from (`preset unwrap`,
// `--strip`, `FILE:LINE`) and how many keys it changed or removed.
struct BatchRuleCount {
  std::string rule;
  std::string origin;
  size_t matches = 0;
};

// One line of the JSON Lines report (schema `ckpt-convert.batch/1`).
struct BatchRecord {
  std::string input;
  std::string relative;
  std::string output;
  BatchStatus status = BatchStatus::k_failed;
  int exit_code = 0;
  std::string error;
  // A failed input's output of an earlier run: `removed`, `would be removed`
  // (--dry-run), or empty when there was none.
  std::string stale_output;
  std::string reason;            // why skipped or converted: `up to date`, `new`, `input changed`, …
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;     // size of the output (0 when none); a folder: its files'
  std::string output_format;     // the sink's name: pt, safetensors, safetensors-shards
  std::string dtype;             // what floating tensors are cast to (`--dtype`); "" = kept
  std::vector<ShardWritten> shards;  // a folder output's files, shards then the index
  size_t tensors = 0;
  size_t storages = 0;
  uint64_t storage_bytes = 0;
  std::vector<BatchRuleCount> rules;  // every rule and the keys it matched
  std::vector<std::string> warnings;  // the conversion's (no state dict, a rule that matched nothing)
  size_t renamed = 0;
  size_t dropped = 0;
  std::string verified_on;       // device, or empty when not verified
  double seconds = 0;
};

struct BatchOptions {
  std::vector<std::string> sources;
  std::string output_dir;
  std::vector<std::string> globs = default_batch_globs();
  // Applied to every file; `input`, `output` and `progress` are set per file,
  // `force` means "convert again even when up to date".
  ConvertOptions convert;
  unsigned jobs = 0;             // 0: the CPUs this process may use
  uint64_t max_memory = 0;       // 0: half the machine's memory
  Shard shard;
  // Empty: OUTDIR/ckpt-convert-batch.jsonl (`.shard-I-of-N.jsonl` for a
  // shard; none for a dry run); `-`: none.
  std::string report_path;
  std::string tool_version;      // recorded in the sidecars
  // Called (under a lock, one at a time, as on_record) when an input starts,
  // with the count of inputs in this shard.
  std::function<void(const BatchInput&, size_t total)> on_start;
  // Called (under a lock, one at a time) when an input is done: the record,
  // then how many of `total` are done.
  std::function<void(const BatchRecord&, size_t done, size_t total)> on_record;
  // Told of each file the walk of a folder passes over, and why (`-v`).
  SkipCallback on_skip;
};

// Inputs of one status, and their bytes.
struct BatchTotals {
  size_t inputs = 0;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
};

struct BatchSummary {
  size_t listed = 0;             // inputs before sharding
  size_t inputs = 0;             // inputs of this shard
  BatchTotals converted;
  BatchTotals skipped;
  BatchTotals failed;
  BatchTotals dry_run;
  double seconds = 0;
  unsigned jobs = 0;
  uint64_t max_memory = 0;
  std::string report_path;       // where the records went, or empty
  std::vector<BatchRecord> failures;  // sorted by their path under OUTDIR
  std::vector<BatchRecord> warned;    // done, but with warnings (no state dict, …); sorted so too
};

// Converts every input of `options.sources` in this shard, `options.jobs` at
// a time, largest first, while the inputs in flight stay within
// `options.max_memory` (each counted at its size; one larger than the budget
// runs alone). An input is skipped when its output and the output's sidecar
// (`sidecar_path`) show it was converted from the same input with
// the same options: same size and mtime, or else the same CRC-32 of its
// bytes. A failure is recorded and the others go on. Throws `Error` only for
// what stops the whole batch: usage, colliding outputs, no inputs at all, an
// unusable OUTDIR or report, an unavailable device.
BatchSummary run_batch(const BatchOptions& options);

// The exit status of a finished batch: 0 when nothing failed, else
// `ExitStatus::k_batch_failures`.
int batch_exit_code(const BatchSummary& summary);

// A record as one line of JSON (no newline), and the summary table for stderr.
std::string format_batch_record(const BatchRecord& record);
std::string format_batch_summary(const BatchSummary& summary);

// The fingerprint of the options that shape an output (rules, extraction,
// location, allowed globals, verification device): a sidecar made with
// another fingerprint is out of date.
std::string batch_options_fingerprint(const ConvertOptions& options);

// The sidecar of the output at `relative` under `output_dir`:
// `<output_dir>/.ckpt-convert/<relative>.json`, out of the way of loaders
// that scan the output tree. (Before, it was `<output>.ckpt-convert.json`,
// beside the output: a run that finds one there moves it.)
std::string sidecar_path(const std::string& output_dir, const std::string& relative);

// Which of `pending` (input sizes, largest first) to start next, when
// `running` conversions holding `in_flight` bytes run within `budget`: the
// first that fits; the first of all when none runs; nothing (wait) else.
std::optional<size_t> pick_next_input(const std::vector<uint64_t>& pending, uint64_t in_flight,
                                      size_t running, uint64_t budget);

// The CRC-32 of the whole file at `path`, read in chunks. Throws `Error`.
uint32_t file_crc32(const std::string& path);

}  // namespace ckpt
