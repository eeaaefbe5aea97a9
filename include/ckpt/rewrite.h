// Finding the state dicts in a checkpoint and rewriting them: keys (and the
// `_metadata` module prefixes) by the rules, storage locations by a tag.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ckpt/graph.h"
#include "ckpt/rules.h"

namespace ckpt {

struct StateDictRef {
  Node* dict = nullptr;
  std::string path;  // where it sits, in Python subscript form: `["state_dict"]`
  size_t tensors = 0;
};

// Every state dict reachable from `root`: OrderedDicts with `_metadata`, and
// dicts of str → tensor that are not an optimizer's per-parameter state.
std::vector<StateDictRef> find_state_dicts(Node* root);

// One key of one state dict: what it became, or nothing when dropped.
struct KeyMapping {
  std::string state_dict;  // its path
  std::string old_key;
  std::optional<std::string> new_key;
};

struct StateDictChange {
  std::string path;
  size_t keys = 0;
  size_t renamed = 0;
  size_t dropped = 0;
  size_t unchanged = 0;
};

struct RewriteReport {
  std::vector<KeyMapping> mapping;         // every key, in order
  std::vector<StateDictChange> state_dicts;
  std::vector<size_t> rule_matches;        // per rule, keys it changed or removed
  size_t renamed = 0;
  size_t dropped = 0;
  size_t unchanged = 0;
};

// Applies `rules` to the keys of every state dict in `dicts` (dropping the
// entries drop/keep rules remove) and the renaming rules to their
// `_metadata` prefixes. Throws `FormatError` listing, one per line, every
// pair of keys of one state dict that become equal and every key that
// becomes empty; nothing is changed then.
RewriteReport rewrite_keys(Graph& graph, const std::vector<StateDictRef>& dicts,
                           const Rules& rules);

// What the user should hear about the rules beyond their counts, given the
// rewrite they made (`report.mapping` holds every key before and after).
struct RuleReview {
  // Per rule: empty, or why a rule of the user's that matched no key is no
  // mistake (`already done by preset unwrap`: it matches the keys as saved,
  // but an earlier rule already made that change).
  std::vector<std::string> notes;
  // A rule of the user's that matched no key, with three keys as that rule
  // saw them (after the rules before it); an add-prefix rule whose prefix
  // keys already carry (`module.module.…`).
  std::vector<std::string> warnings;
  // The warnings of rules that matched no key: errors under --require-match.
  std::vector<std::string> unmatched;
};
RuleReview review_rules(const Rules& rules, const RewriteReport& report);

// Sets the location tag of every storage to `tag` (`cpu`, `cuda:0`, …).
void set_locations(Graph& graph, const std::string& tag);

// The model's state dict for `--extract`: the one under `key` when given,
// else the top level when it is one, else the first of `state_dict`, `model`,
// `model_state_dict`, `net`, `module` that holds one. Throws `FormatError`
// listing the top-level keys when there is none.
Node* find_model_state_dict(Node* root, const std::optional<std::string>& key);

}  // namespace ckpt
