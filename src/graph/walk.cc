// Graph traversal without recursion (hostile pickles nest a million deep)
// and without a hash set (a state dict of 50,000 tensors has a million
// nodes): each traversal takes a fresh epoch and marks the nodes it has seen.
#include <atomic>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

uint32_t next_epoch() {
  static std::atomic<uint32_t> epoch{0};
  return ++epoch;
}

void for_each_reachable(const Node* root, const std::function<bool(const Node*)>& visit) {
  uint32_t epoch = next_epoch();
  std::vector<const Node*> pending{root};
  auto push = [&](const Node* node) {
    if (node != nullptr && node->visit_epoch != epoch) {
      pending.push_back(node);
    }
  };
  while (!pending.empty()) {
    const Node* node = pending.back();
    pending.pop_back();
    if (node->visit_epoch == epoch) {
      continue;
    }
    node->visit_epoch = epoch;
    if (!visit(node)) {
      continue;
    }
    // Pushed in reverse, so that they are visited in pickle order.
    if (node->storage != nullptr) {
      push(node->storage->location);
      push(node->storage->type);
    }
    push(node->state);
    for (auto it = node->entries.rbegin(); it != node->entries.rend(); ++it) {
      push(it->second);
      push(it->first);
    }
    for (auto it = node->items.rbegin(); it != node->items.rend(); ++it) {
      push(*it);
    }
    push(node->kwargs);
    push(node->args);
    push(node->callable);
  }
}

}  // namespace ckpt
