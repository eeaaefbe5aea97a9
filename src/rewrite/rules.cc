// Key rules and presets.
//
// The default preset `unwrap` (docs/architecture.md, "The pipeline") strips
// leading `module.` and `_orig_mod.` in any order and number and drops the
// FSDP and activation-checkpointing wrapper components wherever they stand.
// Patterns are RE2 (linear time, so a user's regex cannot hang a batch job)
// and behave as the ecosystem writes them -- mmengine's `revise_keys`,
// Hugging Face's key mappings, sed: `regex` is Python's `re.sub` (every match
// anywhere replaced, `\1` and `\g<name>` in the replacement), `drop` and
// `keep` are `re.search`. Users anchor with `^` and `$` when they mean it.
#include "ckpt/rules.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "ckpt/error.h"
#include "ckpt/spellcheck.h"

namespace ckpt {
namespace {

struct KindName {
  RuleKind kind;
  const char* name;
  size_t arity;
};

constexpr std::array<KindName, 8> k_kinds = {{
    {RuleKind::k_strip, "strip", 1},
    {RuleKind::k_strip_repeated, "strip-repeated", 0},  // presets only: any number of prefixes
    {RuleKind::k_add_prefix, "add-prefix", 1},
    {RuleKind::k_replace, "replace", 2},
    {RuleKind::k_drop_component, "drop-component", 1},
    {RuleKind::k_regex, "regex", 2},
    {RuleKind::k_drop, "drop", 1},
    {RuleKind::k_keep, "keep", 1},
}};

const KindName& kind_info(RuleKind kind) {
  for (const KindName& k : k_kinds) {
    if (k.kind == kind) {
      return k;
    }
  }
  return k_kinds[0];
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::string drop_component(const std::string& key, const std::string& component) {
  std::string out;
  size_t start = 0;
  while (start <= key.size()) {
    size_t dot = key.find('.', start);
    size_t end = dot == std::string::npos ? key.size() : dot;
    std::string part = key.substr(start, end - start);
    if (part != component) {
      if (!out.empty()) {
        out += '.';
      }
      out += part;
    }
    if (dot == std::string::npos) {
      break;
    }
    start = dot + 1;
  }
  return out;
}

// The bytes of the UTF-8 character that starts with `lead` (1 for a stray
// byte), so that stepping past an empty match steps one character, as
// Python does over a `str`.
size_t utf8_length(char lead) {
  auto byte = static_cast<unsigned char>(lead);
  if (byte >= 0xf0) {
    return 4;
  }
  if (byte >= 0xe0) {
    return 3;
  }
  return byte >= 0xc0 ? 2 : 1;
}

// `key` with every non-overlapping match of `rule.pattern` replaced, as
// Python 3.7+'s `re.sub`: an empty match is replaced too, also right after a
// non-empty one (`re.sub('x*', '-', 'abxd')` is `-a-b--d-`), but never twice
// at one place. Where Python, refused an empty match there, would take a
// longer one of lower priority at the same place (`a*?`, `|b`), RE2 cannot
// be asked for it: the search moves on by one character.
std::string substitute(const Rule& rule, const std::string& key) {
  const RE2& pattern = *rule.pattern;
  std::vector<re2::StringPiece> groups(1 + pattern.NumberOfCapturingGroups());
  std::string out;
  size_t copied = 0;  // key[0, copied) is in `out`, rewritten
  size_t from = 0;
  bool after_empty = false;  // the last match was empty and ended at `from`
  while (from <= key.size() &&
         pattern.Match(key, from, key.size(), RE2::UNANCHORED, groups.data(),
                       static_cast<int>(groups.size()))) {
    size_t begin = groups[0].data() - key.data();
    size_t end = begin + groups[0].size();
    if (begin == end && after_empty && begin == from) {
      if (from == key.size()) {
        break;
      }
      from = std::min(key.size(), from + utf8_length(key[from]));
      after_empty = false;
      continue;
    }
    out.append(key, copied, begin - copied);
    for (const ReplacementPart& part : rule.replacement) {
      if (part.group < 0) {
        out += part.text;
      } else {
        const re2::StringPiece& group = groups[static_cast<size_t>(part.group)];
        out.append(group.data(), group.size());
      }
    }
    copied = end;
    from = end;
    after_empty = begin == end;
  }
  out.append(key, copied, std::string::npos);
  return out;
}

// Python's one-letter escapes in a replacement (`re` module's ESCAPES).
std::optional<char> letter_escape(char c) {
  switch (c) {
    case 'a':
      return '\a';
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    case 'v':
      return '\v';
    default:
      return std::nullopt;
  }
}

bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

bool is_octal(char c) { return c >= '0' && c <= '7'; }

[[noreturn]] void refuse_replacement(const Rule& rule, const std::string& why) {
  throw Error(rule.origin + ": invalid replacement '" + rule.args[1] + "' for regex '" +
                  rule.args[0] + "': " + why,
              ExitStatus::k_usage);
}

// The group number `ref` (digits or a name, from `\1` or `\g<ref>`) stands
// for in `pattern`.
int group_number(const Rule& rule, const RE2& pattern, const std::string& ref) {
  if (ref.empty()) {
    refuse_replacement(rule, "missing group name in \\g<>");
  }
  int number = -1;
  if (std::all_of(ref.begin(), ref.end(), is_digit)) {
    number = ref.size() > 9 ? -1 : std::stoi(ref);
  } else if (!is_digit(ref[0]) && std::all_of(ref.begin(), ref.end(), is_word)) {
    auto named = pattern.NamedCapturingGroups().find(ref);
    if (named == pattern.NamedCapturingGroups().end()) {
      refuse_replacement(rule, "unknown group name '" + ref + "'");
    }
    number = named->second;
  } else {
    refuse_replacement(rule, "bad character in group name '" + ref + "'");
  }
  int groups = pattern.NumberOfCapturingGroups();
  if (number < 0 || number > groups) {
    refuse_replacement(rule, "invalid group reference " + ref + " (the regex has " +
                                 std::to_string(groups) + (groups == 1 ? " group)" : " groups)"));
  }
  return number;
}

// Refuses `$1`, `${1}`, `$name` at `repl[at]`: other tools' group syntax,
// which Python's re.sub would copy literally, almost surely by mistake. A `$`
// before anything else is a literal `$`, as in Python.
void refuse_dollar_group(const Rule& rule, const std::string& repl, size_t at) {
  bool braced = at + 1 < repl.size() && repl[at + 1] == '{';
  size_t start = at + 1 + (braced ? 1 : 0);
  // `$1_` is `$1` then `_`, as in Perl and JavaScript; `${1_}` and `$a1_` are names.
  bool number = !braced && start < repl.size() && is_digit(repl[start]);
  size_t end = start;
  while (end < repl.size() && (number ? is_digit(repl[end]) : is_word(repl[end]))) {
    ++end;
  }
  if (end == start || (braced && (end == repl.size() || repl[end] != '}'))) {
    return;
  }
  std::string ref = repl.substr(start, end - start);
  bool short_number = std::all_of(ref.begin(), ref.end(), is_digit) && ref.size() <= 2 &&
                      ref[0] != '0';
  refuse_replacement(rule, "'" + repl.substr(at, end + (braced ? 1 : 0) - at) +
                               "' is not a group in Python's re.sub syntax: write " +
                               (short_number ? "\\" + ref : "\\g<" + ref + ">"));
}

// `rule.args[1]` as Python's `re.sub` reads a replacement for `pattern`:
// `\1`..`\99` and `\g<1>`, `\g<name>` are groups (`\g<0>` the whole match),
// `\\` a backslash, `\n` and Python's other letter escapes their character,
// `\` before other punctuation both characters. Refuses, in Python's words
// where Python refuses too, a bad escape or group; also `$1` (see
// refuse_dollar_group) and `\0` and octal escapes (Python's NUL and octal
// characters: `\0` was this tool's whole match before).
std::vector<ReplacementPart> parse_replacement(const Rule& rule, const RE2& pattern) {
  const std::string& repl = rule.args[1];
  std::vector<ReplacementPart> parts;
  auto literal = [&parts](char c) {
    if (parts.empty() || parts.back().group >= 0) {
      parts.emplace_back();
    }
    parts.back().text += c;
  };
  for (size_t i = 0; i < repl.size(); ++i) {
    if (repl[i] == '$') {
      refuse_dollar_group(rule, repl, i);
    }
    if (repl[i] != '\\') {
      literal(repl[i]);
      continue;
    }
    if (i + 1 == repl.size()) {
      refuse_replacement(rule, "bad escape (end of replacement)");
    }
    char next = repl[++i];
    if (next == 'g') {
      if (i + 1 == repl.size() || repl[i + 1] != '<') {
        refuse_replacement(rule, "missing < after \\g");
      }
      size_t close = repl.find('>', i + 2);
      if (close == std::string::npos) {
        refuse_replacement(rule, "missing >, unterminated name in \\g<");
      }
      parts.push_back({"", group_number(rule, pattern, repl.substr(i + 2, close - i - 2))});
      i = close;
    } else if (next == '0') {
      refuse_replacement(rule, "\\0 is a NUL character in Python's re.sub, not the whole match: "
                               "write \\g<0>");
    } else if (is_octal(next) && i + 2 < repl.size() && is_octal(repl[i + 1]) &&
               is_octal(repl[i + 2])) {
      refuse_replacement(rule, "octal escape \\" + repl.substr(i, 3) + " is not supported");
    } else if (is_digit(next)) {
      size_t digits = i + 1 < repl.size() && is_digit(repl[i + 1]) ? 2 : 1;
      parts.push_back({"", group_number(rule, pattern, repl.substr(i, digits))});
      i += digits - 1;
    } else if (next == '\\') {
      literal('\\');
    } else if (std::optional<char> escaped = letter_escape(next)) {
      literal(*escaped);
    } else if (std::isalpha(static_cast<unsigned char>(next)) != 0) {
      refuse_replacement(rule, std::string("bad escape \\") + next);
    } else {
      literal('\\');
      literal(next);
    }
  }
  return parts;
}

// What a rule did to a key.
enum class Outcome { k_kept, k_changed, k_dropped };

// Applies `rule` to `key` in place (a state dict has tens of thousands of
// keys: no copy of those a rule leaves alone).
Outcome apply_rule(const Rule& rule, std::string& key) {
  auto replaced = [&](std::string next) {
    if (next == key) {
      return Outcome::k_kept;
    }
    key = std::move(next);
    return Outcome::k_changed;
  };
  switch (rule.kind) {
    case RuleKind::k_strip:
      if (!rule.args[0].empty() && starts_with(key, rule.args[0])) {
        key.erase(0, rule.args[0].size());
        return Outcome::k_changed;
      }
      return Outcome::k_kept;
    case RuleKind::k_strip_repeated: {
      Outcome outcome = Outcome::k_kept;
      bool stripped = true;
      while (stripped) {
        stripped = false;
        for (const std::string& prefix : rule.args) {
          if (!prefix.empty() && starts_with(key, prefix)) {
            key.erase(0, prefix.size());
            stripped = true;
            outcome = Outcome::k_changed;
          }
        }
      }
      return outcome;
    }
    case RuleKind::k_add_prefix:
      if (rule.args[0].empty()) {
        return Outcome::k_kept;
      }
      key.insert(0, rule.args[0]);
      return Outcome::k_changed;
    case RuleKind::k_replace:
      if (!starts_with(key, rule.args[0])) {
        return Outcome::k_kept;
      }
      return replaced(rule.args[1] + key.substr(rule.args[0].size()));
    case RuleKind::k_drop_component: {
      std::string out = key;
      for (const std::string& component : rule.args) {
        out = drop_component(out, component);
      }
      return replaced(std::move(out));
    }
    case RuleKind::k_regex:
      return replaced(substitute(rule, key));
    case RuleKind::k_drop:
      return RE2::PartialMatch(key, *rule.pattern) ? Outcome::k_dropped : Outcome::k_kept;
    case RuleKind::k_keep:
      return RE2::PartialMatch(key, *rule.pattern) ? Outcome::k_kept : Outcome::k_dropped;
  }
  return Outcome::k_kept;
}

Rule preset_rule(RuleKind kind, std::vector<std::string> args, const std::string& preset) {
  Rule rule;
  rule.kind = kind;
  rule.args = std::move(args);
  rule.origin = "preset " + preset;
  return rule;
}

void add_unwrap(Rules& rules, const std::string& preset) {
  rules.add(preset_rule(RuleKind::k_strip_repeated, {"module.", "_orig_mod."}, preset));
  rules.add(preset_rule(RuleKind::k_drop_component,
                        {"_fsdp_wrapped_module", "_checkpoint_wrapped_module"}, preset));
}

}  // namespace

std::string Rule::describe() const {
  std::string text = kind_info(kind).name;
  for (const std::string& arg : args) {
    text += " " + arg;
  }
  return text;
}

Rule make_rule(RuleKind kind, std::vector<std::string> args, std::string origin) {
  size_t arity = rule_arity(kind);
  if (arity != 0 && args.size() != arity) {
    throw Error(origin + ": '" + kind_info(kind).name + "' takes " + std::to_string(arity) +
                    (arity == 1 ? " argument" : " arguments") + ", got " +
                    std::to_string(args.size()),
                ExitStatus::k_usage);
  }
  Rule rule;
  rule.kind = kind;
  rule.args = std::move(args);
  rule.origin = std::move(origin);
  if (kind == RuleKind::k_regex || kind == RuleKind::k_drop || kind == RuleKind::k_keep) {
    RE2::Options options;
    options.set_log_errors(false);
    auto pattern = std::make_shared<const RE2>(rule.args[0], options);
    if (!pattern->ok()) {
      throw Error(rule.origin + ": invalid regex '" + rule.args[0] + "': " + pattern->error(),
                  ExitStatus::k_usage);
    }
    if (kind == RuleKind::k_regex) {
      rule.replacement = parse_replacement(rule, *pattern);
    }
    rule.pattern = std::move(pattern);
  }
  return rule;
}

std::optional<RuleKind> rule_kind_named(const std::string& name) {
  for (const KindName& k : k_kinds) {
    if (name == k.name && k.arity != 0) {
      return k.kind;
    }
  }
  return std::nullopt;
}

std::vector<std::string> rule_kind_names() {
  std::vector<std::string> names;
  for (const KindName& k : k_kinds) {
    if (k.arity != 0) {
      names.emplace_back(k.name);
    }
  }
  return names;
}

size_t rule_arity(RuleKind kind) { return kind_info(kind).arity; }

std::vector<std::string> Rules::preset_names() {
  return {"unwrap", "none", "lightning", "ddp", "add-module"};
}

Rules Rules::preset(const std::string& name) {
  Rules rules;
  if (name == "unwrap") {
    add_unwrap(rules, name);
  } else if (name == "lightning") {
    add_unwrap(rules, name);
    rules.add(preset_rule(RuleKind::k_strip, {"_forward_module."}, name));
    rules.add(preset_rule(RuleKind::k_strip, {"model."}, name));
  } else if (name == "ddp") {
    rules.add(preset_rule(RuleKind::k_strip_repeated, {"module."}, name));
  } else if (name == "add-module") {
    rules.add(preset_rule(RuleKind::k_add_prefix, {"module."}, name));
  } else if (name != "none") {
    std::string message = "unknown preset '" + name + "'";
    if (std::optional<std::string> hint = closest_match(name, preset_names())) {
      message += ", did you mean '" + *hint + "'?";
    } else {
      message += " (see --list-presets)";
    }
    throw Error(message, ExitStatus::k_usage);
  }
  return rules;
}

std::string Rules::describe_presets() {
  static const char* const k_purpose[] = {
      "DataParallel, DDP, torch.compile and FSDP wrappers (the default)",
      "no rules: only the rules you give",
      "PyTorch Lightning / Fabric checkpoints of a LightningModule holding self.model",
      "DataParallel and DDP only",
      "single-GPU weights for a model you will wrap in DataParallel or DDP",
  };
  std::string text;
  std::vector<std::string> names = preset_names();
  for (size_t i = 0; i < names.size(); ++i) {
    text += names[i] + ": " + k_purpose[i] + "\n";
    Rules rules = preset(names[i]);
    for (const Rule& rule : rules.rules()) {
      text += "  " + rule.describe() + "\n";
    }
    if (rules.rules().empty()) {
      text += "  (no rules)\n";
    }
  }
  return text;
}

std::optional<std::string> Rules::apply(const std::string& key, std::vector<size_t>* matches) const {
  std::string out = key;
  for (size_t i = 0; i < m_rules.size(); ++i) {
    Outcome outcome = apply_rule(m_rules[i], out);
    if (matches != nullptr && outcome != Outcome::k_kept) {
      ++(*matches)[i];
    }
    if (outcome == Outcome::k_dropped) {
      return std::nullopt;
    }
  }
  return out;
}

std::string Rules::rename(const std::string& key) const {
  std::string out = key;
  for (const Rule& rule : m_rules) {
    if (rule.renames()) {
      apply_rule(rule, out);
    }
  }
  return out;
}

}  // namespace ckpt
