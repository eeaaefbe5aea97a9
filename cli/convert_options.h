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
  std::vector<std::string> values;  // flattened: arity values per use
};

struct ConvertFlags {
  ConvertOptions options;
  std::string preset = "unwrap";
  std::vector<RuleFlag> rule_flags = {
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
  bool no_verify = false;
};

// Registers --device, --location, --preset, --rules, the rule options,
// --require-match, --extract[=KEY], --no-verify and --allow-global on `app`,
// in the help section `group` (nullptr: the command's own options).
void add_convert_flags(CLI::App& app, ConvertFlags& flags, const char* group = nullptr);

// Completes `flags.options` once `app` is parsed: the rules in the order
// their options were given (rule files read), extraction and verification.
// Throws `Error` (usage) for a bad rule or rule file.
void finish_convert_flags(const CLI::App& app, ConvertFlags& flags);

// Sends diagnostics to stderr as `ckpt-convert: <level>: …`: errors only
// when `quiet`, warnings by default, info and debug with -v, trace with -vv.
void set_log_level(bool quiet, int verbosity);

}  // namespace ckpt::cli
