// Graph traversal without recursion: hostile pickles nest a million deep.
#include <unordered_set>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

void for_each_reachable(const Node* root, const std::function<bool(const Node*)>& visit) {
  std::unordered_set<const Node*> seen;
  std::vector<const Node*> pending{root};
  std::vector<const Node*> children;
  while (!pending.empty()) {
    const Node* node = pending.back();
    pending.pop_back();
    if (node == nullptr || !seen.insert(node).second || !visit(node)) {
      continue;
    }
    children.clear();
    children.push_back(node->callable);
    children.push_back(node->args);
    children.push_back(node->kwargs);
    children.insert(children.end(), node->items.begin(), node->items.end());
    for (const auto& [key, value] : node->entries) {
      children.push_back(key);
      children.push_back(value);
    }
    children.push_back(node->state);
    if (node->storage != nullptr) {
      children.push_back(node->storage->type);
      children.push_back(node->storage->location);
    }
    pending.insert(pending.end(), children.rbegin(), children.rend());
  }
}

}  // namespace ckpt
