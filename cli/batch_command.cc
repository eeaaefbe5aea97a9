// ckpt-convert batch SRC... -o OUTDIR [options]: converts a model zoo (see
// include/ckpt/batch.h). Failures are printed as they happen, a summary table
// at the end; the exit code says whether any input failed.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "ckpt/batch.h"
#include "ckpt/error.h"
#include "commands.h"
#include "convert_options.h"
#include "json_errors.h"
#include "terminal.h"

namespace ckpt::cli {
namespace {

struct BatchArgs {
  BatchOptions options;
  ConvertFlags convert;
  std::vector<std::string> globs;
  std::string shard;
  std::string max_memory;
  bool dry_run = false;
  bool force = false;
  bool json = false;
  bool quiet = false;
  int verbosity = 0;
};

const char* const k_footer = R"(SOURCES
  A folder is searched recursively for *.pth, *.pth.tar, *.pt, *.bin, *.ckpt and
  *.safetensors (--glob to change; -v lists what was passed over, and why); its files go
  to OUTDIR under the same relative path. A folder holding an HF shard index
  (model.safetensors.index.json, pytorch_model.bin.index.json, ...) is one input, read as
  one state dict, when the globs match one of its files; its shards are not taken one by
  one. A file or shard folder named directly goes to OUTDIR/<its name>.
  @FILE reads one path a line (# comments); a relative path there keeps its place under
  OUTDIR. @- reads the list from standard input.

OUTPUT NAMES
  The output's name follows the format written (--format; pt by default):
    pt           a file keeps its name (a.pth.tar stays a.pth.tar, w.bin stays w.bin),
                 but x.safetensors becomes x.pth; a shard folder F becomes F.pth
    safetensors  the name without its extension, then .safetensors (a/b.pth.tar ->
                 a/b.safetensors); a shard folder F becomes F.safetensors
    --max-shard-size  every output is a folder of shards: the name without its
                 extension (a/b.pth -> a/b/), a shard folder F keeps its name (F/)

RESUMING
  Each output OUTDIR/P gets a sidecar OUTDIR/.ckpt-convert/P.json (input size, mtime and
  CRC-32, options; a shard folder's: of its index and every shard; a folder output's: each
  file's size and mtime); one left beside the output by an older version is moved there. An input
  whose output and sidecar show it already converted with the same options is skipped;
  --force converts everything again. An input that fails loses the output of earlier runs.

SHARDS
  --shard I/N (0 <= I < N) takes a stable share of the list, for Slurm arrays
  (--shard $SLURM_ARRAY_TASK_ID/N), Kubernetes indexed Jobs or GNU parallel. Each shard
  writes its own report, OUTDIR/ckpt-convert-batch.shard-I-of-N.jsonl.

EXIT CODES
  0 every input converted or up to date; 5 some inputs failed (the others were done);
  1 no input found, unreadable source; 2 usage; 4 device unavailable.

EXAMPLES
  ckpt-convert batch zoo/ -o zoo-clean/ --jobs 8 --max-memory 16G
  find zoo -name '*.pth.tar' | ckpt-convert batch @- -o zoo-clean/ --extract
)";

int run(const CLI::App& app, BatchArgs& args) {
  set_log_level(args.quiet, args.verbosity);
  if (!args.quiet && args.verbosity == 1) {
    spdlog::set_level(spdlog::level::info);  // -v: one line per input; -vv: every stage
  }
  finish_convert_flags(app, args.convert);
  BatchOptions& options = args.options;
  options.convert = args.convert.options;
  options.convert.dry_run = args.dry_run;
  options.convert.force = args.force;
  if (!args.globs.empty()) {
    options.globs = args.globs;
  }
  if (!args.shard.empty()) {
    options.shard = parse_shard(args.shard);
  }
  if (!args.max_memory.empty()) {
    options.max_memory = parse_byte_size("--max-memory", args.max_memory);
  }
  options.tool_version = "ckpt-convert " CKPT_VERSION;
  if (!args.quiet && args.verbosity >= 1) {
    options.on_skip = [](const std::string& path, const std::string& reason) {
      spdlog::info("skipped {}: {}", path, reason);
    };
  }
  // The status line: inputs done of all, then the files in flight, redrawn
  // in place and cut to the terminal's width (see terminal.h).
  bool progress = !args.quiet && args.verbosity == 0 && stderr_terminal().smart;
  bool progress_shown = false;
  std::vector<std::string> running;
  size_t finished = 0;
  size_t inputs = 0;
  auto clear_status = [&]() {
    if (progress_shown) {
      std::fputs("\r\033[K", stderr);
      progress_shown = false;
    }
  };
  auto draw_status = [&]() {
    if (!progress || running.empty()) {
      return;
    }
    int width = stderr_terminal().width;
    std::string line = "[" + std::to_string(finished) + "/" + std::to_string(inputs) + "] ";
    // Each file in flight gets an equal share of the width, elided from the
    // left: the end of a path tells the files apart.
    size_t room = static_cast<size_t>(std::max(1, width - 1));
    size_t separators = 2 * (running.size() - 1);
    size_t share = room > line.size() + separators
                       ? std::max<size_t>(8, (room - line.size() - separators) / running.size())
                       : 8;
    for (size_t i = 0; i < running.size(); ++i) {
      line += (i == 0 ? "" : ", ") + elide_left(running[i], share);
    }
    std::fprintf(stderr, "\r\033[K%s", fit_to_width(line, width).c_str());
    std::fflush(stderr);
    progress_shown = true;
  };
  options.on_start = [&](const BatchInput& input, size_t total) {
    inputs = total;
    running.push_back(input.relative);
    draw_status();
  };
  options.on_record = [&](const BatchRecord& record, size_t done, size_t total) {
    clear_status();
    finished = done;
    inputs = total;
    auto it = std::find(running.begin(), running.end(), record.relative);
    if (it != running.end()) {
      running.erase(it);
    }
    if (record.status != BatchStatus::k_skipped) {  // a skipped one's are its sidecar's
      for (const std::string& warning : record.warnings) {
        spdlog::warn("{}: {}", record.input, warning);
      }
    }
    if (record.status == BatchStatus::k_failed) {
      print_error_lines(record.error);
      if (record.stale_output == "removed") {
        spdlog::warn("{}: removed the output of an earlier run", record.output);
      } else if (!record.stale_output.empty()) {
        spdlog::warn("{}: would remove the output of an earlier run (--dry-run)", record.output);
      }
    } else {
      spdlog::info("{} {} ({}, {:.2f} s)", batch_status_name(record.status), record.input,
                   record.reason, record.seconds);
    }
    if (args.json) {
      std::fputs((format_batch_record(record) + "\n").c_str(), stdout);
      std::fflush(stdout);
    }
    draw_status();
  };
  BatchSummary summary = run_batch(options);
  clear_status();
  if (!args.quiet) {
    std::fputs(format_batch_summary(summary).c_str(), stderr);
  }
  return batch_exit_code(summary);
}

}  // namespace

Runner add_batch(CLI::App& app) {
  auto args = std::make_shared<BatchArgs>();
  BatchOptions& o = args->options;
  app.footer(k_footer);
  app.add_option("SRC", o.sources, "Checkpoints, folders of them, or @manifest files")
      ->required();
  app.add_option("-o,--output", o.output_dir, "Folder the outputs go to, mirroring the inputs")
      ->required();
  app.add_option("--glob", args->globs,
                 "File name pattern to take in folders (repeatable; default *.pth *.pth.tar *.pt "
                 "*.bin *.ckpt *.safetensors); a pattern with / matches the path below the "
                 "folder")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("-j,--jobs", o.jobs, "Conversions at a time (default: the CPUs available)");
  app.add_option("--max-memory", args->max_memory,
                 "Memory the conversions in flight may use together, each counted at its "
                 "input's size (e.g. 16G; default: half the machine's memory)");
  app.add_option("--shard", args->shard, "Convert only shard I of N (0 <= I < N)")
      ->option_text("I/N");
  app.add_option("--report", o.report_path,
                 "JSON Lines report (default OUTDIR/ckpt-convert-batch[.shard-I-of-N].jsonl; "
                 "- for none)");
  app.add_flag("--force", args->force, "Convert again even the inputs that are up to date");
  app.add_flag("--dry-run", args->dry_run,
               "Read and rewrite every input that is not up to date; write nothing");
  add_convert_flags(app, args->convert, "Conversion (as for ckpt-convert IN OUT)");
  // The output format names the outputs here (OUTPUT NAMES), not the other way round.
  app.get_option("--format")
      ->description("Write every output in this format: pt (default) or safetensors; each "
                    "output is named after it (see OUTPUT NAMES)");
  app.get_option("--max-shard-size")
      ->description("Make every output a folder of HuggingFace shards (safetensors; --format "
                    "pt: .bin) of at most SIZE (5GB, 500MB decimal; 2GiB binary; bytes), named "
                    "as its input without the extension");
  app.add_flag("--json", args->json, "Print each input's record as a JSON line on stdout");
  app.add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  app.add_flag("-v,--verbose", args->verbosity,
               "-v: a line per input converted or skipped, and per file a folder's walk passed "
               "over; -vv: every stage and key too");
  return [args, &app]() -> int {
    return run_with_json_errors(args->json, "batch", [&]() -> int { return run(app, *args); });
  };
}

}  // namespace ckpt::cli
