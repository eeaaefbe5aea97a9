// The default command: ckpt-convert IN OUT [options]. Parses the options into
// a ConvertOptions (rules in the order given), runs the conversion and prints
// the report.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "ckpt/convert.h"
#include "ckpt/error.h"
#include "commands.h"
#include "convert_options.h"
#include "progress.h"

namespace ckpt::cli {
namespace {

struct ConvertArgs {
  ConvertFlags convert;
  bool list_presets = false;
  bool json = false;
  bool quiet = false;
  int verbosity = 0;
};

int run(const CLI::App& app, ConvertArgs& args) {
  if (args.list_presets) {
    std::fputs(Rules::describe_presets().c_str(), stdout);
    return 0;
  }
  ConvertOptions& options = args.convert.options;
  std::unique_ptr<ProgressBar> bar;
  ConvertReport report;
  try {
    if (options.input.empty() || (options.output.empty() && !options.dry_run)) {
      throw Error("expected IN and OUT" + swallowed_out_hint(args.convert) +
                      " (see ckpt-convert --help)",
                  ExitStatus::k_usage);
    }
    set_log_level(args.quiet, args.verbosity);
    finish_convert_flags(app, args.convert);
    bar = ProgressBar::for_stderr(options.input, args.quiet);
    if (bar) {
      options.progress = bar->callback();
    }
    convert(options, report);
  } catch (const Error& e) {
    if (bar) {
      bar->clear();
    }
    if (args.json) {
      report.exit_code = static_cast<int>(e.status());
      report.error = e.what();
      std::fputs(format_report_json(report).c_str(), stdout);
    }
    throw;
  }
  if (bar) {
    bar->clear();
  }
  for (const std::string& warning : report.warnings) {
    spdlog::warn("{}: {}", options.input, warning);
  }
  if (args.json) {
    std::fputs(format_report_json(report).c_str(), stdout);
  } else if (options.dry_run) {
    std::fputs(format_mapping_diff(report).c_str(), stdout);
  }
  if (!args.quiet) {
    std::fputs(format_report_text(report).c_str(), stderr);
  }
  return 0;
}

const char* const k_footer = R"(PRESETS
  unwrap       strip leading module. and _orig_mod. (any order and number); drop the
               _fsdp_wrapped_module and _checkpoint_wrapped_module components (default)
  none         no rules
  lightning    unwrap, then strip _forward_module. and model.
  ddp          strip leading module. only
  add-module   add module. in front of every key
  --list-presets prints each preset's rules.

RULES
  Applied in order to every key of every state dict (renaming rules also to the _metadata
  module prefixes): the preset's first, then --rules files and rule options in the order
  given. Patterns are RE2, applied as Python's re: --regex replaces every match anywhere
  in the key (re.sub; REPL takes \1 and \g<name>, not $1), --drop and --keep select the
  keys the pattern is found in (re.search); anchor with ^ and $. A rule of yours that
  matches no key is a warning (an error with --require-match); keys that collide are an
  error.

RULE FILES (--rules FILE, TOML)
  preset = "unwrap"                      # optional; --preset wins
  [[rule]]
  replace = ["backbone.", "encoder."]    # one rule per [[rule]]: strip, add-prefix,
  [[rule]]                               # replace, drop-component, regex, drop, keep
  drop = '^aux_head\.'

EXIT CODES
  0 done; 1 bad or unsupported input, I/O error; 2 usage; 3 verification failed;
  4 device unavailable.

EXAMPLES
  Strip DataParallel/DDP wrappers, verify on GPU 0:
    ckpt-convert ddp_epoch90.pth model.pth --device cuda:0
  Add module. to load single-GPU weights into a DDP-wrapped model:
    ckpt-convert model.pth ddp_model.pth --preset add-module
  Rename with a rule file, keep only the weights, show what changes first:
    ckpt-convert ckpt.pth encoder.pth --rules rename.toml --extract --dry-run
  The model's weights as safetensors in bf16, norms kept in fp32, one tied head:
    ckpt-convert ddp_epoch90.pth model.safetensors --dtype bf16 --keep-dtype norm --tied dedupe
  Hugging Face shards of at most 5 GB (a folder with model.safetensors.index.json):
    ckpt-convert ddp_epoch90.pth hf_model --max-shard-size 5GB
  A sharded folder (or its index, or a .safetensors file) back to one .pth:
    ckpt-convert hf_model model.pth
)";

}  // namespace

Runner add_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  ConvertOptions& o = args->convert.options;
  app.footer(k_footer);
  app.add_option("IN", o.input, "Checkpoint to read (never modified)");
  app.add_option("OUT", o.output,
                 "Where to write the converted checkpoint (.safetensors by name; a folder: "
                 "OUT/<name of IN>, or the shards with --max-shard-size); not needed with "
                 "--dry-run");
  add_convert_flags(app, args->convert);
  app.add_flag("--list-presets", args->list_presets, "Print every preset's rules and exit");
  app.add_flag("--dry-run", o.dry_run, "Print the key changes as a diff on stdout; write nothing");
  app.add_flag("--force", o.force, "Replace OUT if it exists (the shards in it with --max-shard-size)");
  app.add_flag("--json", args->json, "Print the report as JSON on stdout (docs/report.schema.json)");
  app.add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  app.add_flag("-v,--verbose", args->verbosity, "More detail on stderr: -v stages, -vv every key");
  return [args, &app]() -> int { return run(app, *args); };
}

}  // namespace ckpt::cli
