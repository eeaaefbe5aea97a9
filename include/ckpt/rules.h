// Key rules: how state-dict keys are rewritten (`module.conv1.weight` →
// `conv1.weight`) or removed. A rule list is applied in order to every key.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace re2 {
class RE2;
}

namespace ckpt {

enum class RuleKind {
  k_strip,           // remove a leading prefix once
  k_strip_repeated,  // remove any of several leading prefixes, in any order and number
  k_add_prefix,      // put a prefix in front
  k_replace,         // a leading OLD becomes NEW (literal)
  k_drop_component,  // remove a dotted path component wherever it stands
  k_regex,           // Python's re.sub: every match anywhere → replacement with \1 groups
  k_drop,            // remove entries whose key the pattern is found in (re.search)
  k_keep,            // remove entries whose key the pattern is not found in
};

// One piece of a regex rule's replacement: literal `text`, or, when `group`
// is not -1, what that group matched (empty when it took no part).
struct ReplacementPart {
  std::string text;
  int group = -1;
};

struct Rule {
  RuleKind kind = RuleKind::k_strip;
  std::vector<std::string> args;  // prefixes, component names, OLD NEW, PATTERN [REPLACEMENT]
  std::string origin;             // where it came from: `preset unwrap`, `--strip`, `rules.toml:7`
  std::shared_ptr<const re2::RE2> pattern;  // compiled args[0] for regex/drop/keep
  std::vector<ReplacementPart> replacement;  // args[1] of a regex rule, parsed

  // The rule as a user would write it (`strip module.`).
  std::string describe() const;
  // True for the rules that rename (all but drop and keep).
  bool renames() const { return kind != RuleKind::k_drop && kind != RuleKind::k_keep; }
  bool from_preset() const { return origin.rfind("preset ", 0) == 0; }
};

// Makes a rule of `kind` from `args`, compiling the pattern of regex, drop and
// keep rules and parsing a regex rule's replacement as Python's `re.sub` reads
// it (`\1`, `\g<1>`, `\g<name>`, `\\`, `\n`). Throws `Error` (usage) naming
// `origin` for a wrong argument count, an invalid pattern (with RE2's reason)
// or an invalid replacement (`$1` among them: it says to write `\1`).
Rule make_rule(RuleKind kind, std::vector<std::string> args, std::string origin);

// The kind named `name` (`strip`, `add-prefix`, `replace`, `drop-component`,
// `regex`, `drop`, `keep`), and how many arguments it takes.
std::optional<RuleKind> rule_kind_named(const std::string& name);
std::vector<std::string> rule_kind_names();
size_t rule_arity(RuleKind kind);

class Rules {
public:
  // The rules of preset `name`; throws `Error` (usage) for an unknown name,
  // suggesting the closest preset.
  static Rules preset(const std::string& name);
  static std::vector<std::string> preset_names();
  // Every preset with its rules, one block each, for `--list-presets`.
  static std::string describe_presets();

  void add(Rule rule) { m_rules.push_back(std::move(rule)); }
  const std::vector<Rule>& rules() const { return m_rules; }

  // `key` after every rule, or nothing when a drop/keep rule removes it.
  // Adds 1 to `(*matches)[i]` for each rule i that changed or removed it,
  // when `matches` is given (sized to the rule count).
  std::optional<std::string> apply(const std::string& key,
                                   std::vector<size_t>* matches = nullptr) const;

  // `key` after the renaming rules only (drop and keep are skipped): for
  // `_metadata` module prefixes, which name modules rather than entries.
  std::string rename(const std::string& key) const;

private:
  std::vector<Rule> m_rules;
};

}  // namespace ckpt
