// Fuzz target: the pickle decoder. Any bytes must give a graph or a
// FormatError; the graph must survive everything later stages do with it
// (traversal, globals, tensors, state dicts, key rules), and whatever the
// encoder writes from it must decode and encode back to the same bytes.
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "ckpt/globals.h"
#include "ckpt/rewrite.h"
#include "ckpt/rules.h"
#include "ckpt/tensor.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Graph graph;
  fuzz::StorageLoader storages;
  PersistentLoader load = [&](Graph& g, Node* id) { return storages(g, id); };
  Node* root = nullptr;
  uint64_t consumed = 0;
  try {
    root = decode_pickle(graph, fuzz::span_of(data, size), load, &consumed);
  } catch (const FormatError&) {
    return 0;
  }
  CKPT_FUZZ_CHECK(root != nullptr && consumed >= 1 && consumed <= size);
  list_globals(root);
  try {
    for (const TensorRef& tensor : tensors_reachable(root)) {
      tensor.numel();
    }
  } catch (const FormatError&) {
  }
  try {
    std::vector<StateDictRef> dicts = find_state_dicts(root);
    rewrite_keys(graph, dicts, Rules::preset("unwrap"));
  } catch (const FormatError&) {
  }
  EncodedPickle encoded;
  try {
    encoded = encode_pickle(root, 1000, 16 * size + (1 << 20));  // as convert() bounds it
  } catch (const FormatError&) {
    return 0;
  }
  fuzz::check_round_trip(encoded);
  return 0;
}
