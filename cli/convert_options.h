// The conversion options shared by the commands that convert (the default
// command and `batch`): the device, location, rules in command-line order,
// extraction, verification, allowed globals; and the logging levels of -q/-v.
#pragma once

#include <string>
#include <vector>

#include "ckpt/convert.h"

namespace CLI {
class App;
}

namespace ckpt::cli {

// A command-line option that adds rules of one kind.
struct RuleFlag {
  const char* flag;
  RuleKind kind;
  const char* value_names;          // as --help shows them: `OLD NEW`
  std::vector<std::string> values;  // flattened: arity values per use
};

struct ConvertFlags {
  ConvertOptions options;
  std::string preset = "unwrap";
  std::vector<RuleFlag> rule_flags = {
      {"--strip", RuleKind::k_strip, "P", {}},
      {"--add-prefix", RuleKind::k_add_prefix, "P", {}},
      {"--replace", RuleKind::k_replace, "OLD NEW", {}},
      {"--drop-component", RuleKind::k_drop_component, "NAME", {}},
      {"--regex", RuleKind::k_regex, "PATTERN REPL", {}},
      {"--drop", RuleKind::k_drop, "PATTERN", {}},
      {"--keep", RuleKind::k_keep, "PATTERN", {}},
  };
  std::vector<std::string> rule_files;
  std::string extract;  // "" = off, "*" = find it, else the key
  bool no_verify = false;
  std::string tied = "copy";  // --tied copy|dedupe
  std::string dtype;          // --dtype NAME; "" = keep
  std::vector<std::string> keep_dtype;  // --keep-dtype PATTERN
  std::string max_shard_size;           // --max-shard-size SIZE; "" = one file
};

// Registers --device, --location, --preset, --rules, the rule options,
// --require-match, --extract[=KEY], --no-verify, --allow-global and the
// output options (--format, --tied, --keep-tied, --dtype) on `app`,
// in the help section `group` (nullptr: the command's own options).
void add_convert_flags(CLI::App& app, ConvertFlags& flags, const char* group = nullptr);

// Completes `flags.options` once `app` is parsed: the rules in the order
// their options were given (rule files read), extraction and verification.
// Throws `Error` (usage) for a bad rule or rule file.
void finish_convert_flags(const CLI::App& app, ConvertFlags& flags);

// Throws `Error` (usage) when a rule option of two values (`--replace OLD
// NEW`, `--regex PATTERN REPL`) in the arguments `args` (in order) is not
// followed by two values: CLI11 would take the one given and drop the rule.
void check_rule_option_values(const std::vector<std::string>& args);

// Throws `Error` (usage) for `--extract KEY` written with a space: a bare
// `--extract` takes no value (it finds the state dict), so KEY would become
// IN or OUT. Taken as such when the word after it is no file, and has no
// `/` or `.` as file names do.
void check_bare_extract(const std::vector<std::string>& args);

// For a command line that lacks OUT: a hint when a rule option of two values
// took the last positional argument as its second value (` (--replace took
// 'old' 'out.pth' as OLD NEW …)`), else empty.
std::string swallowed_out_hint(const ConvertFlags& flags);

// Sends diagnostics to stderr as `ckpt-convert: <level>: …`: errors only
// when `quiet`, warnings by default, info and debug with -v, trace with -vv.
void set_log_level(bool quiet, int verbosity);

}  // namespace ckpt::cli
