// The default command: ckpt-convert IN OUT [options]. Parses the options into
// a ConvertOptions (rules in the order given), runs the conversion and prints
// the report.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "ckpt/convert.h"
#include "ckpt/error.h"
#include "ckpt/rule_file.h"
#include "commands.h"
#include "progress.h"

namespace ckpt::cli {
namespace {

// A command-line option that adds rules of one kind.
struct RuleOption {
  const char* flag;
  RuleKind kind;
  std::vector<std::string> values;  // flattened: arity values per use
};

struct ConvertArgs {
  ConvertOptions options;
  std::string preset = "unwrap";
  std::vector<RuleOption> rule_options = {
      {"--strip", RuleKind::k_strip, {}},
      {"--add-prefix", RuleKind::k_add_prefix, {}},
      {"--replace", RuleKind::k_replace, {}},
      {"--drop-component", RuleKind::k_drop_component, {}},
      {"--regex", RuleKind::k_regex, {}},
      {"--drop", RuleKind::k_drop, {}},
      {"--keep", RuleKind::k_keep, {}},
  };
  std::vector<std::string> rule_files;
  std::string extract;  // "" = off, "*" = find it, else the key
  bool list_presets = false;
  bool no_verify = false;
  bool json = false;
  bool quiet = false;
  int verbosity = 0;
};

// The rules in the order their options were given: CLI11 keeps each
// option's values apart, its parse order interleaves them.
Rules build_rules(const CLI::App& app, ConvertArgs& args) {
  std::vector<Rule> given;
  std::optional<std::string> file_preset;
  std::vector<size_t> used(args.rule_options.size(), 0);
  size_t files_used = 0;
  for (const CLI::Option* option : app.parse_order()) {
    if (option->get_name() == "--rules" && files_used < args.rule_files.size()) {
      RuleFile file = load_rule_file(args.rule_files[files_used++]);
      if (file.preset) {
        file_preset = file.preset;
      }
      given.insert(given.end(), file.rules.begin(), file.rules.end());
      continue;
    }
    for (size_t i = 0; i < args.rule_options.size(); ++i) {
      RuleOption& rule_option = args.rule_options[i];
      size_t arity = rule_arity(rule_option.kind);
      if (option->get_name() != rule_option.flag || used[i] + arity > rule_option.values.size()) {
        continue;
      }
      std::vector<std::string> values(rule_option.values.begin() + static_cast<long>(used[i]),
                                      rule_option.values.begin() + static_cast<long>(used[i] + arity));
      used[i] += arity;
      given.push_back(make_rule(rule_option.kind, std::move(values), rule_option.flag));
    }
  }
  bool preset_given = app.get_option("--preset")->count() > 0;
  Rules rules = Rules::preset(preset_given || !file_preset ? args.preset : *file_preset);
  for (Rule& rule : given) {
    rules.add(std::move(rule));
  }
  return rules;
}

void set_log_level(const ConvertArgs& args) {
  // Diagnostics go to stderr: stdout carries only what was asked for.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("stderr"));
  spdlog::set_pattern("ckpt-convert: %l: %v");
  if (args.quiet) {
    spdlog::set_level(spdlog::level::err);
  } else if (args.verbosity >= 2) {
    spdlog::set_level(spdlog::level::trace);
  } else if (args.verbosity == 1) {
    spdlog::set_level(spdlog::level::debug);
  } else {
    spdlog::set_level(spdlog::level::warn);
  }
}

int run(const CLI::App& app, ConvertArgs& args) {
  if (args.list_presets) {
    std::fputs(Rules::describe_presets().c_str(), stdout);
    return 0;
  }
  ConvertOptions& options = args.options;
  if (options.input.empty() || options.output.empty()) {
    throw Error("expected IN and OUT (see ckpt-convert --help)", ExitStatus::k_usage);
  }
  set_log_level(args);
  options.rules = build_rules(app, args);
  options.extract = !args.extract.empty();
  if (options.extract && args.extract != "*") {
    options.extract_key = args.extract;
  }
  options.verify = !args.no_verify;
  std::unique_ptr<ProgressBar> bar = ProgressBar::for_stderr(options.input, args.quiet);
  if (bar) {
    options.progress = bar->callback();
  }

  ConvertReport report;
  try {
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
  given. Patterns are RE2 and must match the whole key. A rule of yours that matches no
  key is a warning (an error with --require-match); keys that collide are an error.

RULE FILES (--rules FILE, TOML)
  preset = "unwrap"                      # optional; --preset wins
  [[rule]]
  replace = ["backbone.", "encoder."]    # one rule per [[rule]]: strip, add-prefix,
  [[rule]]                               # replace, drop-component, regex, drop, keep
  drop = 'aux_head\..*'

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
)";

}  // namespace

Runner add_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  ConvertOptions& o = args->options;
  app.footer(k_footer);
  app.add_option("IN", o.input, "Checkpoint to read (never modified)");
  app.add_option("OUT", o.output, "Where to write the converted checkpoint");
  app.add_option("--device", o.device, "Device the output is loaded on to verify it (cpu, cuda:N)")
      ->capture_default_str();
  app.add_option("--location", o.location,
                 "Location tag written on every storage; 'keep' keeps the input's")
      ->capture_default_str();
  app.add_option("--preset", args->preset, "Key rule preset (see PRESETS)")->capture_default_str();
  app.add_flag("--list-presets", args->list_presets, "Print every preset's rules and exit");
  app.add_option("--rules", args->rule_files, "Add the rules of a TOML rule file (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  const char* const help[] = {
      "Strip the leading prefix P once",
      "Put the prefix P in front of every key",
      "Replace a leading OLD with NEW",
      "Remove the dotted component NAME wherever it stands",
      "Rename keys matching the RE2 PATTERN wholly to REPL (\\1 groups)",
      "Remove the entries whose key matches the RE2 PATTERN",
      "Remove the entries whose key does not match the RE2 PATTERN",
  };
  const char* const value_names[] = {"P", "P", "OLD NEW", "NAME", "PATTERN REPL", "PATTERN",
                                     "PATTERN"};
  for (size_t i = 0; i < args->rule_options.size(); ++i) {
    RuleOption& rule_option = args->rule_options[i];
    app.add_option(rule_option.flag, rule_option.values, help[i])
        ->expected(static_cast<int>(rule_arity(rule_option.kind)))
        ->allow_extra_args(false)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->option_text(value_names[i])
        ->group("Rules (repeatable, applied in the order given)");
  }
  app.add_flag("--require-match", o.require_match, "Make a rule that matches no key an error");
  // `--extract` alone arrives as `--extract=*` (see main.cc).
  app.add_option("--extract", args->extract,
                 "Write only the model's state dict; --extract=KEY names its top-level key")
      ->option_text("[=KEY]");
  app.add_flag("--dry-run", o.dry_run, "Print the key changes as a diff on stdout; write nothing");
  app.add_flag("--force", o.force, "Replace OUT if it exists");
  app.add_flag("--no-verify", args->no_verify, "Skip reloading and comparing the output");
  app.add_option("--allow-global", o.allowed_globals,
                 "Allow this global (module.name) in the output (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--json", args->json, "Print the report as JSON on stdout (docs/report.schema.json)");
  app.add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  app.add_flag("-v,--verbose", args->verbosity, "More detail on stderr: -v stages, -vv every key");
  return [args, &app]() -> int { return run(app, *args); };
}

}  // namespace ckpt::cli
