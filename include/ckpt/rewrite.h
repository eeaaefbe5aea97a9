// Finding the state dicts in a checkpoint and rewriting them: keys (and the
// `_metadata` module prefixes) by the rules, storage locations by a tag.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ckpt/graph.h"
#include "ckpt/rules.h"

namespace ckpt {

// One step from the checkpoint's root towards an object: a dict key (a str,
// or an int), a list or tuple index, an argument of a reconstructed object
// (`.args[i]`), its BUILD state (`.__dict__`), or a key of another type.
struct PathStep {
  enum class Kind { k_key, k_int_key, k_index, k_arg, k_state, k_other_key };
  Kind kind = Kind::k_key;
  std::string key;     // k_key
  int64_t index = 0;   // k_int_key, k_index, k_arg
};

struct StateDictRef {
  Node* dict = nullptr;
  std::string path;  // where it sits, in Python subscript form: `["state_dict"]`
  std::vector<PathStep> steps;  // the same, step by step (empty: the top level)
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
  std::vector<PathStep> steps;
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

// The class global (`module.Name`) of `node` when it is a pickled nn.Module
// (what `torch.save(model)` writes): a call of a class whose BUILD state
// holds the dicts `_parameters`, `_buffers` and `_modules`; else null.
const Node* module_class(const Node* node);

// Builds in `graph` the OrderedDict `object.state_dict()` would return for the
// pickled module `object` (module_class() not null): its parameters and
// persistent buffers that are not None, its children's under `name.`, the
// values the tensors `object` holds (a Parameter's data), no `_metadata`.
// Runs nothing. Throws `FormatError` naming the module for a module tree
// that is not one (a parameter that is no tensor, modules nested over 1000
// deep or shared by too many paths).
Node* module_state_dict(Graph& graph, const Node* object);

// A whole pickled model in a checkpoint: the top level, or the value under
// one of the keys `--extract` searches.
struct PickledModule {
  Node* object = nullptr;
  std::string module;  // the class's module: `__main__`, `torchvision.models.resnet`
  std::string name;    // the class's name: `ResNet`
  std::string path;    // where it sits: `(top level)`, `["model"]`
};

// The pickled model at `root`, else under the first of `state_dict`,
// `model`, `model_state_dict`, `net`, `module` that holds one; nullopt if
// there is none.
std::optional<PickledModule> find_pickled_module(Node* root);

// The model's state dict for `--extract`: the one under `key` when given,
// else the top level when it is one, else the first of `state_dict`, `model`,
// `model_state_dict`, `net`, `module` that holds one. A whole pickled model
// found there instead (see find_pickled_module) gives its state dict, built
// in `graph` by module_state_dict(). Throws `FormatError` listing the
// top-level keys when there is none.
Node* find_model_state_dict(Graph& graph, const std::optional<std::string>& key);

}  // namespace ckpt
