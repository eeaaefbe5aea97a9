// Key rules and presets (DESIGN.md: the default preset `unwrap` strips leading
// `module.` and `_orig_mod.` in any order and number and drops the FSDP and
// activation-checkpointing wrapper components wherever they stand).
#include "ckpt/rules.h"

#include <algorithm>

#include "ckpt/error.h"

namespace ckpt {
namespace {

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

std::string apply_rule(const Rule& rule, const std::string& key) {
  switch (rule.kind) {
    case RuleKind::k_strip:
      return starts_with(key, rule.args[0]) ? key.substr(rule.args[0].size()) : key;
    case RuleKind::k_strip_repeated: {
      std::string out = key;
      bool stripped = true;
      while (stripped) {
        stripped = false;
        for (const std::string& prefix : rule.args) {
          if (!prefix.empty() && starts_with(out, prefix)) {
            out.erase(0, prefix.size());
            stripped = true;
          }
        }
      }
      return out;
    }
    case RuleKind::k_add_prefix:
      return rule.args[0] + key;
    case RuleKind::k_drop_component: {
      std::string out = key;
      for (const std::string& component : rule.args) {
        out = drop_component(out, component);
      }
      return out;
    }
  }
  return key;
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

}  // namespace

std::string Rule::describe() const {
  std::string verb;
  switch (kind) {
    case RuleKind::k_strip: verb = "strip"; break;
    case RuleKind::k_strip_repeated: verb = "strip-repeated"; break;
    case RuleKind::k_add_prefix: verb = "add-prefix"; break;
    case RuleKind::k_drop_component: verb = "drop-component"; break;
  }
  for (const std::string& arg : args) {
    verb += " " + arg;
  }
  return verb;
}

std::vector<std::string> Rules::preset_names() { return {"unwrap", "none"}; }

Rules Rules::preset(const std::string& name) {
  Rules rules;
  if (name == "unwrap") {
    rules.add({RuleKind::k_strip_repeated, {"module.", "_orig_mod."}, "preset unwrap"});
    rules.add({RuleKind::k_drop_component,
               {"_fsdp_wrapped_module", "_checkpoint_wrapped_module"},
               "preset unwrap"});
    return rules;
  }
  if (name == "none") {
    return rules;
  }
  std::string message = "unknown preset '" + name + "'";
  if (std::optional<std::string> hint = closest_match(name, preset_names())) {
    message += ", did you mean '" + *hint + "'?";
  } else {
    message += " (presets: unwrap, none)";
  }
  throw Error(message, ExitStatus::k_usage);
}

std::string Rules::apply(const std::string& key, std::vector<size_t>* matches) const {
  std::string out = key;
  for (size_t i = 0; i < m_rules.size(); ++i) {
    std::string next = apply_rule(m_rules[i], out);
    if (matches != nullptr && next != out) {
      ++(*matches)[i];
    }
    out = std::move(next);
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
