// What the rules did, said to the user (see rewrite.h's `review_rules`).
// Rules see the keys as the rules before them left them: a user's
// `--strip module.` after the default preset finds nothing to strip because
// the preset already did, which is no mistake of theirs, so it is reported
// as done rather than warned about. A rule that truly matches nothing is
// shown with keys as it saw them, which is what the user needs to fix it.
#include <algorithm>

#include "ckpt/rewrite.h"

namespace ckpt {
namespace {

constexpr size_t k_samples = 3;

// The rules `rules[first, last)` as a list of their own.
Rules slice(const std::vector<Rule>& rules, size_t first, size_t last) {
  Rules out = Rules::preset("none");
  for (size_t i = first; i < last; ++i) {
    out.add(rules[i]);
  }
  return out;
}

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string out;
  for (const std::string& key : keys) {
    out += (out.empty() ? "'" : ", '") + key + "'";
  }
  return out;
}

}  // namespace

RuleReview review_rules(const Rules& rules, const RewriteReport& report) {
  const std::vector<Rule>& all = rules.rules();
  RuleReview review;
  review.notes.assign(all.size(), "");
  for (size_t i = 0; i < all.size(); ++i) {
    const Rule& rule = all[i];
    bool matched = i < report.rule_matches.size() && report.rule_matches[i] != 0;
    bool unmatched_users = !matched && !rule.from_preset();  // the rules to explain
    bool is_add_prefix = rule.kind == RuleKind::k_add_prefix;
    if (!unmatched_users && !is_add_prefix) {
      continue;
    }
    // The keys as rule i saw them: the original keys after the rules before it.
    Rules before = slice(all, 0, i);
    Rules alone = slice(all, i, i + 1);
    std::vector<std::string> seen;
    size_t already_prefixed = 0;
    size_t original_matches = 0;  // keys as saved that the rule alone changes
    bool subsumed = true;         // and for each, the rules before it made that change too
    std::vector<size_t> counted(1, 0);
    for (const KeyMapping& m : report.mapping) {
      std::optional<std::string> key = before.apply(m.old_key);
      if (!key) {
        continue;
      }
      if (is_add_prefix && key->rfind(rule.args[0], 0) == 0) {
        ++already_prefixed;
      }
      if (!unmatched_users) {
        continue;
      }
      if (seen.size() < k_samples) {
        seen.push_back(*key);
      }
      counted[0] = 0;
      std::optional<std::string> changed = alone.apply(m.old_key, &counted);
      if (counted[0] != 0) {
        ++original_matches;
        subsumed = subsumed && changed && before.apply(*changed) == key;
      }
    }
    std::string name = "rule '" + rule.describe() + "' (" + rule.origin + ")";
    if (is_add_prefix && already_prefixed > 0) {
      review.warnings.push_back(name + ": " + std::to_string(already_prefixed) + " of " +
                                std::to_string(report.mapping.size()) +
                                " keys already start with '" + rule.args[0] + "' and become '" +
                                rule.args[0] + rule.args[0] + "…'");
    }
    if (!unmatched_users) {
      continue;
    }
    if (original_matches > 0 && subsumed) {
      // It matches the keys as saved, and the rules before it already made
      // its change (`strip module.` after the preset unwrap).
      std::string by = "an earlier rule";
      for (size_t j = 0; j < i; ++j) {
        if (report.rule_matches[j] != 0) {
          by = all[j].from_preset() ? all[j].origin : "rule '" + all[j].describe() + "'";
          break;
        }
      }
      review.notes[i] = "already done by " + by;
      continue;
    }
    std::string what = name + " matched no key";
    if (!seen.empty()) {
      what += "; keys as the rules saw them: " + quoted_list(seen) +
              (report.mapping.size() > seen.size() ? ", …" : "");
    }
    review.warnings.push_back(what);
    review.unmatched.push_back(what);
  }
  return review;
}

}  // namespace ckpt
