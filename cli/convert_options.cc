// The conversion options of the default command and of `batch` (see
// convert_options.h).
// Rules must apply in the order their options were given: CLI11 keeps each
// option's values apart, its parse order interleaves them.
#include "convert_options.h"

#include <CLI/CLI.hpp>
#include <sys/stat.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "ckpt/cast.h"
#include "ckpt/error.h"
#include "ckpt/location.h"
#include "ckpt/rule_file.h"
#include "ckpt/shard_plan.h"
#include "terminal.h"

namespace ckpt::cli {

void add_convert_flags(CLI::App& app, ConvertFlags& flags, const char* group) {
  ConvertOptions& o = flags.options;
  // CLI11 hides the options of an empty group: no group means the default one.
  auto grouped = [group](CLI::Option* option) {
    return group != nullptr ? option->group(group) : option;
  };
  grouped(app.add_option("--device", o.device,
                         "Device the output is loaded on to verify it (cpu, cuda:N)"))
      ->capture_default_str();
  grouped(app.add_option("--location", o.location,
                         "Location tag written on every storage; 'keep' keeps the input's"))
      ->capture_default_str();
  grouped(app.add_option("--preset", flags.preset, "Key rule preset (ckpt-convert --list-presets)"))
      ->capture_default_str();
  grouped(app.add_option("--rules", flags.rule_files,
                         "Add the rules of a TOML rule file (repeatable)"))
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  const char* const help[] = {
      "Strip the leading prefix P once",
      "Put the prefix P in front of every key",
      "Replace a leading OLD with NEW",
      "Remove the dotted component NAME wherever it stands",
      "Replace every match of the RE2 PATTERN with REPL, as re.sub (\\1, \\g<name>)",
      "Remove the entries whose key the RE2 PATTERN is found in (re.search)",
      "Remove the entries whose key the RE2 PATTERN is not found in",
  };
  for (size_t i = 0; i < flags.rule_flags.size(); ++i) {
    RuleFlag& rule_flag = flags.rule_flags[i];
    app.add_option(rule_flag.flag, rule_flag.values, help[i])
        ->expected(static_cast<int>(rule_arity(rule_flag.kind)))
        ->allow_extra_args(false)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->option_text(rule_flag.value_names)
        ->group("Rules (repeatable, applied in the order given)");
  }
  grouped(app.add_flag("--require-match", o.require_match,
                       "Make a rule that matches no key an error"));
  // `--extract` alone arrives as `--extract=*` (see main.cc).
  grouped(app.add_option("--extract", flags.extract,
                         "Write only the model's state dict; --extract=KEY names its top-level key"))
      ->option_text("[=KEY]");
  grouped(app.add_flag("--no-verify", flags.no_verify, "Skip reloading and comparing the output"));
  grouped(app.add_option("--allow-global", o.allowed_globals,
                         "Allow this global (module.name) in the output (repeatable)"))
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  const char* output_group = "Output format";
  app.add_option("--format", o.format,
                 "Write this format whatever OUT's name: pt, safetensors (default: by OUT's "
                 "name, .safetensors or else pt)")
      ->option_text("FORMAT")
      ->group(output_group);
  app.add_option("--tied", flags.tied,
                 "safetensors: names sharing bytes (a tied LM head) are each written "
                 "(copy), or one is kept and the rest recorded as aliases (dedupe)")
      ->check(CLI::IsMember({"copy", "dedupe"}))
      ->capture_default_str()
      ->group(output_group);
  app.add_option("--keep-tied", o.sink.keep_tied,
                 "With --tied dedupe: keep this name of its tied group (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->option_text("NAME")
      ->group(output_group);
  app.add_option("--dtype", flags.dtype,
                 "Cast floating-point tensors to bf16, fp16, fp32 or fp64, as Module.to(dtype) "
                 "does (integer and bool tensors are left alone)")
      ->option_text("DTYPE")
      ->group(output_group);
  app.add_option("--keep-dtype", flags.keep_dtype,
                 "With --dtype: leave the tensors whose key the RE2 PATTERN is found in as "
                 "they are (norms kept in fp32; repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->option_text("PATTERN")
      ->group(output_group);
  app.add_option("--tag", flags.options.read.tag,
                 "A DeepSpeed run folder: read the checkpoint of TAG (global_step1200) "
                 "instead of the one its `latest` file names")
      ->option_text("TAG");
  app.add_option("--max-shard-size", flags.max_shard_size,
                 "OUT becomes a folder of HuggingFace shards of at most SIZE (5GB, 500MB "
                 "decimal; 2GiB binary; bytes) and model.safetensors.index.json")
      ->option_text("SIZE")
      ->group(output_group);
}

void finish_convert_flags(const CLI::App& app, ConvertFlags& flags) {
  std::vector<Rule> given;
  std::optional<std::string> file_preset;
  std::vector<size_t> used(flags.rule_flags.size(), 0);
  size_t files_used = 0;
  for (const CLI::Option* option : app.parse_order()) {
    if (option->get_name() == "--rules" && files_used < flags.rule_files.size()) {
      RuleFile file = load_rule_file(flags.rule_files[files_used++]);
      if (file.preset) {
        file_preset = file.preset;
      }
      given.insert(given.end(), file.rules.begin(), file.rules.end());
      continue;
    }
    for (size_t i = 0; i < flags.rule_flags.size(); ++i) {
      RuleFlag& rule_flag = flags.rule_flags[i];
      size_t arity = rule_arity(rule_flag.kind);
      if (option->get_name() != rule_flag.flag || used[i] + arity > rule_flag.values.size()) {
        continue;
      }
      std::vector<std::string> values(rule_flag.values.begin() + static_cast<long>(used[i]),
                                      rule_flag.values.begin() + static_cast<long>(used[i] + arity));
      used[i] += arity;
      given.push_back(make_rule(rule_flag.kind, std::move(values), rule_flag.flag));
    }
  }
  bool preset_given = app.get_option("--preset")->count() > 0;
  Rules rules = Rules::preset(preset_given || !file_preset ? flags.preset : *file_preset);
  for (Rule& rule : given) {
    rules.add(std::move(rule));
  }
  ConvertOptions& o = flags.options;
  check_location_option(o.location);
  o.rules = std::move(rules);
  o.extract = !flags.extract.empty();
  if (o.extract && flags.extract != "*") {
    o.extract_key = flags.extract;
  }
  o.verify = !flags.no_verify;
  o.sink.tied = flags.tied == "dedupe" ? TiedPolicy::k_dedupe : TiedPolicy::k_copy;
  if (!flags.dtype.empty()) {
    o.sink.dtype = parse_dtype_name(flags.dtype);
    if (!castable(*o.sink.dtype, *o.sink.dtype)) {
      throw Error("--dtype " + flags.dtype + ": casts go to bf16, fp16, fp32 or fp64",
                  ExitStatus::k_usage);
    }
  }
  if (!flags.keep_dtype.empty() && !o.sink.dtype) {
    throw Error("--keep-dtype needs --dtype", ExitStatus::k_usage);
  }
  if (!flags.max_shard_size.empty()) {
    o.sink.max_shard_size = parse_shard_size(flags.max_shard_size);
  }
  for (const std::string& pattern : flags.keep_dtype) {
    o.sink.keep_dtype.push_back(make_rule(RuleKind::k_keep, {pattern}, "--keep-dtype"));
  }
}

void check_rule_option_values(const std::vector<std::string>& args) {
  const ConvertFlags flags;
  for (size_t i = 0; i < args.size() && args[i] != "--"; ++i) {
    for (const RuleFlag& rule_flag : flags.rule_flags) {
      size_t arity = rule_arity(rule_flag.kind);
      if (arity < 2 || args[i] != rule_flag.flag) {
        continue;
      }
      // A value may be empty (`--regex '^module\.' ''`), not an option.
      auto is_value = [&](size_t j) {
        return j < args.size() && (args[j].size() < 2 || args[j][0] != '-');
      };
      if (is_value(i + 1) && is_value(i + 2)) {
        i += 2;
        break;
      }
      size_t given = is_value(i + 1) ? 1 : 0;
      std::string got = given == 0 ? "nothing" : "only '" + args[i + 1] + "'";
      if (i + 1 + given < args.size()) {
        got += " before " + args[i + 1 + given];
      }
      throw Error(std::string(rule_flag.flag) + " needs two values, " + rule_flag.value_names +
                      "; got " + got,
                  ExitStatus::k_usage);
    }
  }
}

void check_bare_extract(const std::vector<std::string>& args) {
  for (size_t i = 0; i + 1 < args.size() && args[i] != "--"; ++i) {
    const std::string& next = args[i + 1];
    struct stat s {};
    if (args[i] != "--extract" || next.empty() || next[0] == '-' ||
        next.find_first_of("/.") != std::string::npos || ::stat(next.c_str(), &s) == 0) {
      continue;
    }
    throw Error("--extract takes a KEY only as --extract=KEY: write --extract=" + next +
                    " (a bare --extract finds the state dict; '" + next +
                    "' would be taken for IN or OUT)",
                ExitStatus::k_usage);
  }
}

std::string swallowed_out_hint(const ConvertFlags& flags) {
  for (const RuleFlag& rule_flag : flags.rule_flags) {
    size_t n = rule_flag.values.size();
    if (rule_arity(rule_flag.kind) == 2 && n >= 2) {
      return std::string("; ") + rule_flag.flag + " took '" + rule_flag.values[n - 2] + "' '" +
             rule_flag.values[n - 1] + "' as its " + rule_flag.value_names +
             ": give it both values, or put IN and OUT first";
    }
  }
  return "";
}

void set_log_level(bool quiet, int verbosity) {
  // Diagnostics go to stderr: stdout carries only what was asked for.
  // Warnings yellow and errors red on a terminal that takes colour (see terminal.h).
  spdlog::color_mode mode = stderr_terminal().color ? spdlog::color_mode::always
                                                    : spdlog::color_mode::never;
  spdlog::set_default_logger(spdlog::stderr_color_mt("stderr", mode));
  spdlog::set_pattern("ckpt-convert: %^%l%$: %v");
  if (quiet) {
    spdlog::set_level(spdlog::level::err);
  } else if (verbosity >= 2) {
    spdlog::set_level(spdlog::level::trace);
  } else if (verbosity == 1) {
    spdlog::set_level(spdlog::level::debug);
  } else {
    spdlog::set_level(spdlog::level::warn);
  }
}

}  // namespace ckpt::cli
