// This file finds state dicts in a checkpoint's graph and rewrites their keys.
//
// A state dict is what `Module.state_dict()` returns: an OrderedDict of
// str → tensor whose `_metadata` attribute maps module prefixes (`''` is the
// root, `module.layer1`) to `{'version': N}`. Keys and `_metadata` prefixes
// are rewritten by the same rules, or BatchNorm and friends lose their
// versions. Wrappers leave their own `_metadata` entry (DataParallel's `''`)
// beside the wrapped model's (`module` → `''`): where two prefixes meet, the
// longer original wins, since it belongs to the module inside the wrapper.
//
// `--extract` takes the model's state dict from here; a checkpoint that holds
// a whole pickled model instead gets the one module_tree.cc builds from it.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "ckpt/error.h"
#include "ckpt/rewrite.h"
#include "ckpt/tensor.h"
#include "util/string_index.h"

namespace ckpt {
namespace {

constexpr int k_max_depth = 1000;

std::string quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

Node* metadata_of(const Node* dict) {
  if (dict->state == nullptr || dict->state->kind != NodeKind::k_dict) {
    return nullptr;
  }
  Node* metadata = dict_get(dict->state, "_metadata");
  return metadata != nullptr && metadata->kind == NodeKind::k_dict ? metadata : nullptr;
}

// An optimizer's state_dict: {'state': {...}, 'param_groups': [...]}. Its
// per-parameter dicts (`exp_avg`, `momentum_buffer`) are not model weights.
bool is_optimizer_state(const Node* node) {
  return node->kind == NodeKind::k_dict && dict_get(node, "state") != nullptr &&
         dict_get(node, "param_groups") != nullptr;
}

// Counts the tensors of `dict` if it is a state dict, else returns nullopt.
std::optional<size_t> state_dict_tensors(const Node* dict) {
  if (dict->kind != NodeKind::k_dict) {
    return std::nullopt;
  }
  size_t tensors = 0;
  bool all_tensors = true;
  for (const auto& [key, value] : dict->entries) {
    if (!key->is_str()) {
      return std::nullopt;
    }
    if (is_tensor(value)) {
      ++tensors;
    } else {
      all_tensors = false;
    }
  }
  if (metadata_of(dict) != nullptr) {
    return tensors;
  }
  if (all_tensors && tensors > 0) {
    return tensors;
  }
  return std::nullopt;
}

// `steps` in Python subscript form, as messages and reports show a path:
// `["model"][0]`, `.args[1]`, `.__dict__`.
std::string path_text(const std::vector<PathStep>& steps) {
  std::string out;
  for (const PathStep& step : steps) {
    switch (step.kind) {
      case PathStep::Kind::k_key: out += "[" + quote(step.key) + "]"; break;
      case PathStep::Kind::k_int_key:
      case PathStep::Kind::k_index: out += "[" + std::to_string(step.index) + "]"; break;
      case PathStep::Kind::k_arg: out += ".args[" + std::to_string(step.index) + "]"; break;
      case PathStep::Kind::k_state: out += ".__dict__"; break;
      case PathStep::Kind::k_other_key: out += "[…]"; break;
    }
  }
  return out;
}

class Finder {
public:
  std::vector<StateDictRef> run(Node* root) {
    visit(root, 0, false);
    return std::move(m_found);
  }

private:
  void visit(Node* node, int depth, bool in_optimizer) {
    if (node == nullptr || !m_seen.insert(node).second || is_tensor(node)) {
      return;
    }
    if (depth > k_max_depth) {
      // The path is a thousand steps long by now: name where it starts (cut
      // on a UTF-8 character boundary).
      std::string path = path_text(m_steps);
      size_t shown = std::min<size_t>(path.size(), 60);
      while (shown < path.size() && (static_cast<uint8_t>(path[shown]) & 0xc0) == 0x80) {
        --shown;
      }
      throw FormatError("objects nested deeper than " + std::to_string(k_max_depth) +
                        " levels at " + path.substr(0, shown) +
                        (shown < path.size() ? "…" : ""));
    }
    in_optimizer = in_optimizer || is_optimizer_state(node);
    if (!in_optimizer) {
      if (std::optional<size_t> tensors = state_dict_tensors(node)) {
        m_found.push_back(
            {node, m_steps.empty() ? "(top level)" : path_text(m_steps), m_steps, *tensors});
        return;
      }
    }
    using Kind = PathStep::Kind;
    for (size_t i = 0; i < node->items.size(); ++i) {
      step({Kind::k_index, "", static_cast<int64_t>(i)}, node->items[i], depth, in_optimizer);
    }
    for (const auto& [key, value] : node->entries) {
      PathStep s{Kind::k_other_key, "", 0};
      if (key->is_str()) {
        s = {Kind::k_key, key->text.str(), 0};
      } else if (key->kind == NodeKind::k_int && key->text.empty()) {
        s = {Kind::k_int_key, "", key->integer};
      }
      step(std::move(s), value, depth, in_optimizer);
    }
    if (node->kind == NodeKind::k_call) {
      const NodeList& args = node->args->items;
      for (size_t i = 0; i < args.size(); ++i) {
        step({Kind::k_arg, "", static_cast<int64_t>(i)}, args[i], depth, in_optimizer);
      }
    }
    if (node->state != nullptr) {
      step({Kind::k_state, "", 0}, node->state, depth, in_optimizer);
    }
  }

  void step(PathStep s, Node* node, int depth, bool in_optimizer) {
    m_steps.push_back(std::move(s));
    visit(node, depth + 1, in_optimizer);
    m_steps.pop_back();
  }

  std::unordered_set<const Node*> m_seen;
  std::vector<StateDictRef> m_found;
  std::vector<PathStep> m_steps;  // from the root to the node visited
};

// A `_metadata` prefix as a key prefix: `module.conv` → `module.conv.`, root `` → ``.
std::string rewrite_prefix(const Rules& rules, const std::string& prefix) {
  std::string as_key = prefix.empty() ? "" : prefix + ".";
  std::string out = rules.rename(as_key);
  if (!out.empty() && out.back() == '.') {
    out.pop_back();
  }
  return out;
}

void rewrite_metadata(Graph& graph, Node* metadata, const Rules& rules) {
  std::unordered_map<std::string, size_t> slot_of;  // new prefix → index in `kept`
  std::vector<NodeEntry> kept;
  std::vector<size_t> source_length;
  for (const auto& [key, value] : metadata->entries) {
    if (!key->is_str()) {
      kept.push_back({key, value});
      source_length.push_back(0);
      continue;
    }
    std::string renamed = rewrite_prefix(rules, key->text.str());
    Node* new_key = renamed == key->text ? key : graph.make_str(renamed);
    auto [it, inserted] = slot_of.emplace(renamed, kept.size());
    if (inserted) {
      kept.push_back({new_key, value});
      source_length.push_back(key->text.size());
    } else if (key->text.size() > source_length[it->second]) {
      kept[it->second] = {new_key, value};
      source_length[it->second] = key->text.size();
    }
  }
  graph.assign(metadata->entries, kept.data(), kept.size());
}

}  // namespace

std::vector<StateDictRef> find_state_dicts(Node* root) { return Finder().run(root); }

RewriteReport rewrite_keys(Graph& graph, const std::vector<StateDictRef>& dicts,
                           const Rules& rules) {
  RewriteReport report;
  report.rule_matches.assign(rules.rules().size(), 0);
  // First compute every new key (into report.mapping, where dict d's start
  // at first[d]) and check them all; change nothing until every state dict
  // passed.
  std::vector<size_t> first(dicts.size());
  std::string problems;
  auto problem = [&](const std::string& line) { problems += (problems.empty() ? "" : "\n") + line; };
  for (size_t d = 0; d < dicts.size(); ++d) {
    const StateDictRef& ref = dicts[d];
    StateDictChange change;
    change.path = ref.path;
    change.steps = ref.steps;
    // The new keys, viewed in report.mapping (reserved so that they stay
    // put), each with the index of its mapping.
    StringIndex origin(ref.dict->entries.size());
    first[d] = report.mapping.size();
    report.mapping.reserve(report.mapping.size() + ref.dict->entries.size());
    for (const auto& [key, value] : ref.dict->entries) {
      KeyMapping& mapping = report.mapping.emplace_back();
      mapping.state_dict = ref.path;
      mapping.old_key = key->text.str();
      mapping.new_key = rules.apply(mapping.old_key, &report.rule_matches);
      const std::optional<std::string>& new_key = mapping.new_key;
      ++change.keys;
      if (!new_key) {
        ++change.dropped;
      } else if (new_key->empty()) {
        problem("state dict " + ref.path + ": key '" + key->text + "' becomes empty under the rules");
      } else {
        if (std::optional<size_t> earlier = origin.insert(*new_key, report.mapping.size() - 1)) {
          problem("state dict " + ref.path + ": keys collide: '" +
                  report.mapping[*earlier].old_key + "' and '" + key->text + "' both become '" +
                  *new_key + "'");
        }
        ++(*new_key == key->text ? change.unchanged : change.renamed);
      }
    }
    report.renamed += change.renamed;
    report.dropped += change.dropped;
    report.unchanged += change.unchanged;
    report.state_dicts.push_back(std::move(change));
  }
  if (!problems.empty()) {
    throw FormatError(problems);
  }
  for (size_t d = 0; d < dicts.size(); ++d) {
    Node* dict = dicts[d].dict;
    std::vector<NodeEntry> kept;
    kept.reserve(dict->entries.size());
    for (size_t i = 0; i < dict->entries.size(); ++i) {
      auto [key, value] = dict->entries[i];
      const std::optional<std::string>& new_key = report.mapping[first[d] + i].new_key;
      if (!new_key) {
        continue;
      }
      kept.push_back({*new_key == key->text ? key : graph.make_str(*new_key), value});
    }
    graph.assign(dict->entries, kept.data(), kept.size());
    if (Node* metadata = metadata_of(dict)) {
      rewrite_metadata(graph, metadata, rules);
    }
  }
  return report;
}

void set_locations(Graph& graph, const std::string& tag) {
  Node* location = graph.make_str(tag);  // one shared str, as torch.save's 'cpu'
  for (Storage& storage : graph.storages()) {
    storage.location = location;
  }
}

namespace {

// The top-level keys `--extract` searches, in order.
constexpr const char* k_model_keys[] = {"state_dict", "model", "model_state_dict", "net", "module"};

std::optional<PickledModule> pickled_module_at(Node* node, const std::string& path) {
  const Node* cls = module_class(node);
  if (cls == nullptr) {
    return std::nullopt;
  }
  return PickledModule{node, cls->text.str(), cls->name.str(), path};
}

}  // namespace

std::optional<PickledModule> find_pickled_module(Node* root) {
  if (std::optional<PickledModule> found = pickled_module_at(root, "(top level)")) {
    return found;
  }
  if (root->kind == NodeKind::k_dict) {
    for (const char* candidate : k_model_keys) {
      Node* value = dict_get(root, candidate);
      if (value == nullptr) {
        continue;
      }
      std::optional<PickledModule> found = pickled_module_at(value, "[" + quote(candidate) + "]");
      if (found) {
        return found;
      }
    }
  }
  return std::nullopt;
}

Node* find_model_state_dict(Graph& graph, const std::optional<std::string>& key) {
  Node* root = graph.root;
  if (key) {
    Node* value = root->kind == NodeKind::k_dict ? dict_get(root, *key) : nullptr;
    if (value == nullptr) {
      throw FormatError("no top-level key '" + *key + "' to extract");
    }
    if (module_class(value) != nullptr) {
      return module_state_dict(graph, value);
    }
    if (!state_dict_tensors(value)) {
      throw FormatError("'" + *key + "' is not a state dict (a dict of str to tensors)");
    }
    return value;
  }
  if (state_dict_tensors(root)) {
    return root;
  }
  if (root->kind == NodeKind::k_dict) {
    for (const char* candidate : k_model_keys) {
      Node* value = dict_get(root, candidate);
      if (value != nullptr && state_dict_tensors(value)) {
        return value;
      }
    }
  }
  if (std::optional<PickledModule> model = find_pickled_module(root)) {
    return module_state_dict(graph, model->object);
  }
  std::string keys;
  if (root->kind == NodeKind::k_dict) {
    for (const auto& [k, v] : root->entries) {
      if (k->is_str()) {
        keys += (keys.empty() ? "" : ", ") + k->text;
      }
    }
  }
  throw FormatError("no model state dict found under state_dict, model, model_state_dict, "
                    "net or module" + (keys.empty() ? std::string() : " (top-level keys: " + keys + ")") +
                    "; name it with --extract=KEY");
}

}  // namespace ckpt
