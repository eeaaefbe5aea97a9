// The state dict of a whole pickled model (src/rewrite/module_tree.cc): module
// objects built in memory the way the decoder reads `torch.save(model)`, a
// call of the class with the module's `__dict__` as its BUILD state.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "ckpt/rewrite.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

using Items = std::vector<std::pair<std::string, Node*>>;

class ModuleTreeTest : public ::testing::Test {
protected:
  Node* none() { return graph.make(NodeKind::k_none); }

  Node* tuple(std::vector<Node*> items) {
    Node* node = graph.make(NodeKind::k_tuple);
    graph.assign(node->items, items.data(), items.size());
    return node;
  }

  Node* call(Node* callable, std::vector<Node*> args) {
    Node* node = graph.make(NodeKind::k_call);
    node->callable = callable;
    node->args = tuple(std::move(args));
    return node;
  }

  Node* ordered_dict(const Items& items) {
    Node* dict = graph.make(NodeKind::k_dict);
    dict->callable = m_ordered_dict;
    for (const auto& [key, value] : items) {
      graph.push_back(dict->entries, NodeEntry{graph.make_str(key), value});
    }
    return dict;
  }

  // A tensor as `_rebuild_tensor_v2` rebuilds it (its arguments do not matter here).
  Node* tensor() { return call(m_rebuild_tensor, {none()}); }
  // A Parameter over a fresh tensor, as `_rebuild_parameter` rebuilds it.
  Node* parameter() { return call(m_rebuild_parameter, {tensor(), none(), none()}); }

  // `cls.__new__(cls)` with BUILD state {_parameters, _buffers,
  // _non_persistent_buffers_set (when `non_persistent` is given), _modules}.
  Node* module(const char* cls, const Items& parameters, const Items& buffers,
               const Items& children, Node* non_persistent = nullptr) {
    Node* object = call(graph.make_global("models", cls), {});
    object->style = CallStyle::k_newobj;
    Items state = {{"training", none()},
                   {"_parameters", ordered_dict(parameters)},
                   {"_buffers", ordered_dict(buffers)}};
    if (non_persistent != nullptr) {
      state.push_back({"_non_persistent_buffers_set", non_persistent});
    }
    state.push_back({"_modules", ordered_dict(children)});
    object->state = ordered_dict(state);
    object->state->callable = nullptr;  // a plain dict
    return object;
  }

  // `set([names…])` as protocol 2 writes it.
  Node* name_set(std::vector<std::string> names) {
    Node* list = graph.make(NodeKind::k_list);
    for (const std::string& name : names) {
      graph.push_back(list->items, graph.make_str(name));
    }
    return call(graph.make_global("__builtin__", "set"), {list});
  }

  std::vector<std::string> keys(const Node* dict) {
    std::vector<std::string> out;
    for (const auto& [key, value] : dict->entries) {
      out.push_back(key->text.str());
    }
    return out;
  }

  Graph graph;
  Node* m_ordered_dict = graph.make_global("collections", "OrderedDict");
  Node* m_rebuild_tensor = graph.make_global("torch._utils", "_rebuild_tensor_v2");
  Node* m_rebuild_parameter = graph.make_global("torch._utils", "_rebuild_parameter");
};

TEST_F(ModuleTreeTest, KeysAsStateDictGivesThemWithTheHeldTensors) {
  Node* tied = parameter();
  Node* stat = tensor();
  Node* own = parameter();
  Node* lin = module("Linear", {{"weight", tied}, {"bias", none()}}, {}, {});
  Node* head = module("Linear", {{"weight", tied}}, {}, {});
  Node* root = module("Net", {{"scale", own}},
                      {{"cache", tensor()}, {"stat", stat}, {"gone", none()}},
                      {{"lin", lin}, {"skip", none()}, {"head", head}}, name_set({"cache"}));
  ASSERT_NE(module_class(root), nullptr);
  EXPECT_EQ(qualified_name(*module_class(root)), "models.Net");

  Node* dict = module_state_dict(graph, root);
  EXPECT_EQ(keys(dict),
            (std::vector<std::string>{"scale", "stat", "lin.weight", "head.weight"}));
  EXPECT_EQ(dict->callable, m_ordered_dict);  // an OrderedDict, as state_dict() returns
  EXPECT_EQ(dict->state, nullptr);            // no _metadata: versions are class attributes
  // A Parameter's data, as state_dict() detaches it; a buffer as it is.
  EXPECT_EQ(dict->entries[0].second, own->args->items[0]);
  EXPECT_EQ(dict->entries[1].second, stat);
  // Tied weights: one tensor under both keys.
  EXPECT_EQ(dict->entries[2].second, tied->args->items[0]);
  EXPECT_EQ(dict->entries[3].second, tied->args->items[0]);
}

TEST_F(ModuleTreeTest, NonPersistentBuffersInEveryPickledSetForm) {
  // EMPTY_SET + ADDITEMS (protocol 4).
  Node* set = graph.make(NodeKind::k_set);
  graph.push_back(set->items, graph.make_str("a"));
  Node* root = module("Net", {}, {{"a", tensor()}, {"b", tensor()}}, {}, set);
  EXPECT_EQ(keys(module_state_dict(graph, root)), std::vector<std::string>{"b"});
  // set() without arguments, and no such field at all (torch < 1.6).
  root = module("Net", {}, {{"a", tensor()}}, {},
                call(graph.make_global("builtins", "set"), {}));
  EXPECT_EQ(keys(module_state_dict(graph, root)), std::vector<std::string>{"a"});
  root = module("Net", {}, {{"a", tensor()}}, {});
  EXPECT_EQ(keys(module_state_dict(graph, root)), std::vector<std::string>{"a"});
}

TEST_F(ModuleTreeTest, ClassOfReconstructorCallsAndWhatIsNoModule) {
  // Protocols 0 and 1: copyreg._reconstructor(cls, object, None).
  Node* object = module("Net", {}, {}, {});
  Node* cls = object->callable;
  object->callable = graph.make_global("copy_reg", "_reconstructor");
  object->args = tuple({cls, graph.make_global("__builtin__", "object"), none()});
  EXPECT_EQ(module_class(object), cls);

  EXPECT_EQ(module_class(ordered_dict({{"w", tensor()}})), nullptr);  // a state dict
  Node* no_modules = module("Net", {}, {}, {});
  graph.assign(no_modules->state->entries, no_modules->state->entries.data(), 3);
  EXPECT_EQ(module_class(no_modules), nullptr);  // no `_modules`
}

TEST_F(ModuleTreeTest, RefusesWhatIsNoModuleTree) {
  Node* bad = module("Linear", {{"weight", graph.make_str("w")}}, {}, {});
  Node* root = module("Net", {}, {}, {{"fc", bad}});
  EXPECT_EQ(format_error_of([&] { module_state_dict(graph, root); }),
            "pickled module 'fc': parameter 'weight' is neither a tensor nor None");
  root = module("Net", {}, {}, {{"fc", graph.make_int(3)}});
  EXPECT_EQ(format_error_of([&] { module_state_dict(graph, root); }),
            "pickled module (top level): child 'fc' is not a pickled module");
  root = module("Net", {}, {{"b", tensor()}}, {}, graph.make_int(3));
  EXPECT_EQ(format_error_of([&] { module_state_dict(graph, root); }),
            "pickled module (top level): _non_persistent_buffers_set is not a set of names");
}

TEST_F(ModuleTreeTest, RefusesAModuleThatHoldsItself) {
  Node* root = module("Net", {}, {}, {});
  graph.push_back(root->state->entries.end()[-1].second->entries,
                  NodeEntry{graph.make_str("m"), root});
  std::string error = format_error_of([&] { module_state_dict(graph, root); });
  EXPECT_EQ(error.substr(0, 28), "pickled module 'm.m.m.m.m.m.");
  EXPECT_NE(error.find("…: modules nested deeper than 1000 levels (a module that holds itself?)"),
            std::string::npos)
      << error;
}

TEST_F(ModuleTreeTest, RefusesSharedSubmodulesThatSpellTooManyKeys) {
  // 40 levels, each child under two names: 2^40 paths from a few hundred nodes.
  Node* level = module("Leaf", {{"w", tensor()}}, {}, {});
  for (int i = 0; i < 40; ++i) {
    level = module("Pair", {}, {}, {{"a", level}, {"b", level}});
  }
  std::string error = format_error_of([&] { module_state_dict(graph, level); });
  EXPECT_NE(error.find(": the module tree spells more modules and keys than its pickle has "
                       "objects (submodules shared by many paths)"),
            std::string::npos)
      << error;
}

TEST_F(ModuleTreeTest, ExtractFindsAModelUnderATrainingCheckpointsKey) {
  Node* model = module("Net", {{"w", parameter()}}, {}, {});
  Node* root = graph.make(NodeKind::k_dict);
  graph.push_back(root->entries, NodeEntry{graph.make_str("epoch"), graph.make_int(3)});
  graph.push_back(root->entries, NodeEntry{graph.make_str("model"), model});
  graph.root = root;
  std::optional<PickledModule> found = find_pickled_module(root);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->object, model);
  EXPECT_EQ(found->module + "." + found->name + " at " + found->path, "models.Net at [\"model\"]");
  EXPECT_EQ(keys(find_model_state_dict(graph, std::nullopt)), std::vector<std::string>{"w"});
  EXPECT_EQ(keys(find_model_state_dict(graph, "model")), std::vector<std::string>{"w"});
  EXPECT_EQ(find_pickled_module(graph.make_int(1)), std::nullopt);
}

}  // namespace
}  // namespace ckpt::test
