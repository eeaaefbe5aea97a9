// Tensors as the graph holds them: calls of torch's rebuild functions over a
// storage. This header reads such a call into plain numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

struct TensorRef {
  const Node* node = nullptr;     // the call that rebuilds it
  Storage* storage = nullptr;
  Dtype dtype = Dtype::k_float32;
  int64_t offset = 0;             // in elements of `dtype`
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  bool requires_grad = false;
  bool parameter = false;         // wrapped in `_rebuild_parameter*`
  bool quantized = false;         // `_rebuild_qtensor`

  int64_t numel() const;
  // Bytes from the storage's start up to the end of the last element; 0 for
  // an empty tensor.
  uint64_t byte_extent() const;
};

// Interprets `node` as a tensor when it is a call of `_rebuild_tensor`,
// `_rebuild_tensor_v2`, `_rebuild_tensor_v3`, `_rebuild_qtensor`,
// `_rebuild_parameter`, `_rebuild_parameter_with_state` or
// `torch._tensor._rebuild_from_type_v2` around one of them. Returns nothing
// for any other node. Throws `FormatError` when the call is one of these but
// its arguments are malformed, or the tensor reaches past its storage.
std::optional<TensorRef> as_tensor(const Node* node);

// True when `node` is a call of one of the functions above.
bool is_tensor(const Node* node);

// Every tensor reachable from `root`, each once, in pickle order. Throws
// `FormatError` for a malformed one. `expected`, how many there are likely to
// be, saves growing the vector (50,000 tensors: 17 moves of all of them).
std::vector<TensorRef> tensors_reachable(const Node* root, size_t expected = 0);

}  // namespace ckpt
