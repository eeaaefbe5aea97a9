// Rule files (`--rules FILE`): key rules written in TOML.
//
//     preset = "unwrap"            # optional; --preset on the command line wins
//
//     [[rule]]
//     replace = ["backbone.", "encoder."]
//
//     [[rule]]
//     drop = 'aux_head\..*'
//
// Each `[[rule]]` table holds one rule: `strip`, `add-prefix`,
// `drop-component`, `drop`, `keep` take a string; `replace` and `regex` take
// two strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/rules.h"

namespace ckpt {

struct RuleFile {
  std::optional<std::string> preset;
  std::vector<Rule> rules;  // each with origin `name:line`
};

// Parses rule file text; `name` stands for the file in messages. Throws
// `Error` (usage) listing every problem, one `name:line: what` per line.
RuleFile parse_rule_file(std::string_view text, const std::string& name);

// Reads and parses the rule file at `path`.
RuleFile load_rule_file(const std::string& path);

}  // namespace ckpt
