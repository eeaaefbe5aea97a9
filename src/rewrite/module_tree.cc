// This file rebuilds a state dict from a whole pickled model.
//
// `torch.save(model)` pickles the nn.Module object itself: a call of the
// user's class (a GLOBAL that loading would import) whose BUILD state is the
// module's `__dict__`, holding `_parameters`, `_buffers`,
// `_non_persistent_buffers_set` and `_modules`. Loading it needs the class's
// code; its weights need none of it. The walk here gives the keys torch
// 1.13's `Module.state_dict()` gives (`_save_to_state_dict`, then the
// children): per module its parameters that are not None, then its buffers
// that are not None and not in `_non_persistent_buffers_set`, then each
// child that is not None under `prefix + name + '.'`. The values are the
// tensors the object holds, a Parameter's data as `state_dict()` detaches it,
// so tied weights stay one tensor and shared storages stay shared.
//
// Nothing is run: `_state_dict_hooks` and a class's `get_extra_state` are
// code and are not called. `_metadata` is left out: a module's `_version` is
// a class attribute, which the pickle does not hold, and `load_state_dict`
// takes a state dict without it (BatchNorm, version 2, only adds a
// `num_batches_tracked` that is missing, and the walk writes the one it has).
#include <string>
#include <unordered_set>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/rewrite.h"
#include "ckpt/tensor.h"

namespace ckpt {
namespace {

constexpr int k_max_module_depth = 1000;

bool is_set_global(const Node* callable) {
  return callable != nullptr &&
         (callable->is_global("builtins", "set") || callable->is_global("__builtin__", "set"));
}

// The names a module's `_non_persistent_buffers_set` holds: a `set([…])`
// REDUCE (protocol 2), a set built by EMPTY_SET/ADDITEMS (protocol 4), or no
// such field (torch < 1.6 had none).
std::unordered_set<std::string_view> non_persistent_names(const Node* state,
                                                           const std::string& where) {
  std::unordered_set<std::string_view> names;
  const Node* set = dict_get(state, "_non_persistent_buffers_set");
  if (set == nullptr) {
    return names;
  }
  const NodeList* items = nullptr;
  if (set->kind == NodeKind::k_set || set->kind == NodeKind::k_frozenset) {
    items = &set->items;
  } else if (set->kind == NodeKind::k_call && is_set_global(set->callable) &&
             set->args->items.size() <= 1) {
    static const NodeList k_none;
    const Node* list = set->args->items.empty() ? nullptr : set->args->items[0];
    bool listed = list != nullptr &&
                  (list->kind == NodeKind::k_list || list->kind == NodeKind::k_tuple);
    if (list != nullptr && !listed) {
      throw FormatError(where + ": _non_persistent_buffers_set is not a set of names");
    }
    items = listed ? &list->items : &k_none;
  } else {
    throw FormatError(where + ": _non_persistent_buffers_set is not a set of names");
  }
  for (const Node* name : *items) {
    if (name->is_str()) {
      names.insert(name->text.view());
    }
  }
  return names;
}

// What `state_dict()` stores for a parameter or buffer: a Parameter's data
// (it detaches), any other tensor as it is.
Node* detached(Node* tensor) {
  const Node* callable = tensor->callable;
  bool parameter = callable->is_global("torch._utils", "_rebuild_parameter") ||
                   callable->is_global("torch._utils", "_rebuild_parameter_with_state");
  if (parameter && !tensor->args->items.empty() && is_tensor(tensor->args->items[0])) {
    return tensor->args->items[0];
  }
  return tensor;
}

class ModuleWalk {
public:
  explicit ModuleWalk(Graph& graph)
      : m_graph(graph), m_budget(4 * graph.node_count() + 1024) {}

  Node* run(const Node* object) {
    Node* dict = m_graph.make(NodeKind::k_dict);
    visit(object, "", 0);
    dict->callable = m_ordered_dict != nullptr ? m_ordered_dict
                                               : m_graph.make_global("collections", "OrderedDict");
    m_graph.assign(dict->entries, m_entries.data(), m_entries.size());
    return dict;
  }

private:
  // `object` is a module (module_class() said so); `prefix` is its key prefix.
  void visit(const Node* object, const std::string& prefix, int depth) {
    std::string where = prefix.empty()
                            ? "pickled module (top level)"
                            : "pickled module '" + prefix.substr(0, prefix.size() - 1) + "'";
    if (depth > k_max_module_depth) {
      throw FormatError(where.substr(0, 80) + "…: modules nested deeper than " +
                        std::to_string(k_max_module_depth) +
                        " levels (a module that holds itself?)");
    }
    spend(where);
    const Node* state = object->state;
    add_tensors(dict_get(state, "_parameters"), "parameter", {}, prefix, where);
    add_tensors(dict_get(state, "_buffers"), "buffer", non_persistent_names(state, where), prefix,
                where);
    for (const auto& [key, child] : dict_get(state, "_modules")->entries) {
      if (!key->is_str()) {
        throw FormatError(where + ": a child module's name is not a string");
      }
      if (child->kind == NodeKind::k_none) {
        continue;
      }
      if (module_class(child) == nullptr) {
        throw FormatError(where + ": child '" + key->text + "' is not a pickled module");
      }
      visit(child, prefix + key->text + ".", depth + 1);
    }
  }

  // The entries of `dict` (`_parameters` or `_buffers`, a `what` each) that
  // are not None and not named in `skipped`, under `prefix`.
  void add_tensors(const Node* dict, const char* what,
                   const std::unordered_set<std::string_view>& skipped, const std::string& prefix,
                   const std::string& where) {
    if (m_ordered_dict == nullptr && dict->callable != nullptr) {
      m_ordered_dict = dict->callable;  // `collections.OrderedDict`, as the pickle names it
    }
    for (const auto& [key, value] : dict->entries) {
      if (!key->is_str()) {
        throw FormatError(where + ": a " + std::string(what) + "'s name is not a string");
      }
      if (value->kind == NodeKind::k_none || skipped.count(key->text.view()) != 0) {
        continue;
      }
      if (!is_tensor(value)) {
        throw FormatError(where + ": " + what + " '" + key->text +
                          "' is neither a tensor nor None");
      }
      spend(where);
      m_entries.push_back({m_graph.make_str(prefix + key->text), detached(value)});
    }
  }

  // Counts one module visit or key against the budget: modules shared by
  // many paths could otherwise make a small pickle spell billions of keys.
  void spend(const std::string& where) {
    if (m_budget == 0) {
      throw FormatError(where + ": the module tree spells more modules and keys than its "
                        "pickle has objects (submodules shared by many paths)");
    }
    --m_budget;
  }

  Graph& m_graph;
  size_t m_budget;
  Node* m_ordered_dict = nullptr;
  std::vector<NodeEntry> m_entries;
};

}  // namespace

const Node* module_class(const Node* node) {
  if (node == nullptr || node->kind != NodeKind::k_call || node->state == nullptr ||
      node->state->kind != NodeKind::k_dict) {
    return nullptr;
  }
  for (const char* name : {"_parameters", "_buffers", "_modules"}) {
    const Node* value = dict_get(node->state, name);
    if (value == nullptr || value->kind != NodeKind::k_dict) {
      return nullptr;
    }
  }
  // Protocols 0 and 1 spell `cls.__new__(cls)` as copyreg._reconstructor(cls, object, None).
  const Node* cls = node->callable;
  bool reconstructor = cls->is_global("copyreg", "_reconstructor") ||
                       cls->is_global("copy_reg", "_reconstructor");
  if (reconstructor && !node->args->items.empty()) {
    cls = node->args->items[0];
  }
  return cls->kind == NodeKind::k_global ? cls : nullptr;
}

Node* module_state_dict(Graph& graph, const Node* object) { return ModuleWalk(graph).run(object); }

}  // namespace ckpt
