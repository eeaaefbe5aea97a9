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

struct KeyChange {
  std::string state_dict;  // its path
  std::string old_key;
  std::string new_key;
};

struct RewriteReport {
  std::vector<KeyChange> changes;   // keys that the rules changed
  size_t keys_seen = 0;
  std::vector<size_t> rule_matches;  // per rule, keys it changed
};

// Applies `rules` to the keys of every state dict in `dicts` and to their
// `_metadata` prefixes. Throws `FormatError` when two keys of one state dict
// become equal (naming both) or a key becomes empty; nothing is changed then.
RewriteReport rewrite_keys(Graph& graph, const std::vector<StateDictRef>& dicts,
                           const Rules& rules);

// Sets the location tag of every storage to `tag` (`cpu`, `cuda:0`, …).
void set_locations(Graph& graph, const std::string& tag);

// The model's state dict for `--extract`: the one under `key` when given,
// else the top level when it is one, else the first of `state_dict`, `model`,
// `model_state_dict`, `net`, `module` that holds one. Throws `FormatError`
// listing the top-level keys when there is none.
Node* find_model_state_dict(Node* root, const std::optional<std::string>& key);

}  // namespace ckpt
