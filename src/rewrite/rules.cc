// Key rules and presets.
//
// The default preset `unwrap` (docs/architecture.md, "The pipeline") strips
// leading `module.` and `_orig_mod.` in any order and number and drops the
// FSDP and activation-checkpointing wrapper components wherever they stand.
// Patterns are RE2 (linear time, so a user's regex cannot hang a batch job)
// and must match the whole key, as mmengine's `revise_keys` users expect of
// `re.sub` anchored patterns.
#include "ckpt/rules.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>

#include "ckpt/error.h"

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
    case RuleKind::k_regex: {
      std::string out;
      return RE2::Extract(key, *rule.pattern, rule.args[1], &out) ? replaced(std::move(out))
                                                                   : Outcome::k_kept;
    }
    case RuleKind::k_drop:
      return RE2::PartialMatch(key, *rule.pattern) ? Outcome::k_dropped : Outcome::k_kept;
    case RuleKind::k_keep:
      return RE2::PartialMatch(key, *rule.pattern) ? Outcome::k_kept : Outcome::k_dropped;
  }
  return Outcome::k_kept;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
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
    RE2 as_written(rule.args[0], options);
    if (!as_written.ok()) {
      throw Error(rule.origin + ": invalid regex '" + rule.args[0] + "': " + as_written.error(),
                  ExitStatus::k_usage);
    }
    // Anchored, so that matching and rewriting both see the whole key.
    auto pattern = std::make_shared<const RE2>("^(?:" + rule.args[0] + ")$", options);
    std::string why;
    if (kind == RuleKind::k_regex && !pattern->CheckRewriteString(rule.args[1], &why)) {
      throw Error(rule.origin + ": invalid replacement '" + rule.args[1] + "' for regex '" +
                      rule.args[0] + "': " + why,
                  ExitStatus::k_usage);
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

std::optional<std::string> closest_match(const std::string& word,
                                         const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const std::string& candidate : candidates) {
    size_t distance = edit_distance(word, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

}  // namespace ckpt
