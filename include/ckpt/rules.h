// Key rules: how state-dict keys are rewritten (`module.conv1.weight` →
// `conv1.weight`). A rule list is applied in order to every key.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ckpt {

enum class RuleKind {
  k_strip,           // remove a leading prefix once
  k_strip_repeated,  // remove any of several leading prefixes, in any order and number
  k_add_prefix,      // put a prefix in front
  k_drop_component,  // remove a dotted path component wherever it stands
};

struct Rule {
  RuleKind kind = RuleKind::k_strip;
  std::vector<std::string> args;  // prefixes or component names
  std::string origin;             // where it came from: `preset unwrap`, `--strip`

  // The rule as a user would write it (`strip module.`).
  std::string describe() const;
};

class Rules {
public:
  // The rules of preset `name`; throws `Error` (usage) for an unknown name,
  // suggesting the closest preset.
  static Rules preset(const std::string& name);
  static std::vector<std::string> preset_names();

  void add(Rule rule) { m_rules.push_back(std::move(rule)); }
  const std::vector<Rule>& rules() const { return m_rules; }

  // `key` after every rule. Adds 1 to `(*matches)[i]` for each rule i that
  // changed it, when `matches` is given (sized to the rule count).
  std::string apply(const std::string& key, std::vector<size_t>* matches = nullptr) const;

private:
  std::vector<Rule> m_rules;
};

// The closest of `candidates` to `word` within a small edit distance, for
// "did you mean" hints.
std::optional<std::string> closest_match(const std::string& word,
                                         const std::vector<std::string>& candidates);

}  // namespace ckpt
