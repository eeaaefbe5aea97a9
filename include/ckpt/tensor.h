// Tensors as the graph holds them: calls of torch's rebuild functions over a
// storage. This header reads such a call into plain numbers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

// A tensor's sizes or strides. Up to six dimensions live inline: as heap
// vectors, a state dict of 50,000 tensors made 100,000 allocations of them,
// the most frequent in reading it.
class Dims {
public:
  Dims() = default;
  Dims(const std::vector<int64_t>& values) { assign(values.data(), values.size()); }  // NOLINT
  Dims(std::initializer_list<int64_t> values) { assign(values.begin(), values.size()); }
  Dims(const Dims& other) { assign(other.data(), other.size()); }
  Dims& operator=(const Dims& other) {
    if (this != &other) {
      assign(other.data(), other.size());
    }
    return *this;
  }

  void assign(const int64_t* values, size_t count) {
    m_heap.clear();
    if (count > k_inline) {
      m_heap.assign(values, values + count);
    } else {
      std::copy(values, values + count, m_inline);
    }
    m_size = count;
  }
  void push_back(int64_t value) {
    if (m_size < k_inline) {
      m_inline[m_size++] = value;
      return;
    }
    if (m_size == k_inline) {
      m_heap.assign(m_inline, m_inline + k_inline);
    }
    m_heap.push_back(value);
    ++m_size;
  }

  size_t size() const { return m_size; }
  bool empty() const { return m_size == 0; }
  const int64_t* data() const { return m_size > k_inline ? m_heap.data() : m_inline; }
  int64_t* data() { return m_size > k_inline ? m_heap.data() : m_inline; }
  int64_t operator[](size_t i) const { return data()[i]; }
  int64_t& operator[](size_t i) { return data()[i]; }
  const int64_t* begin() const { return data(); }
  const int64_t* end() const { return data() + m_size; }
  std::vector<int64_t> vec() const { return {begin(), end()}; }

  friend bool operator==(const Dims& a, const Dims& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Dims& a, const Dims& b) { return !(a == b); }

private:
  static constexpr size_t k_inline = 6;
  size_t m_size = 0;
  int64_t m_inline[k_inline] = {};
  std::vector<int64_t> m_heap;  // all of them when there are more than k_inline
};

struct TensorRef {
  const Node* node = nullptr;     // the call that rebuilds it
  Storage* storage = nullptr;
  Dtype dtype = Dtype::k_float32;
  int64_t offset = 0;             // in elements of `dtype`
  Dims sizes;
  Dims strides;
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

// Building tensors for a format with no pickle (safetensors): the nodes
// torch.save's pickle decodes to, so that every later stage reads them as it
// reads a decoded checkpoint.

// A storage of `graph` holding `numel` elements of `dtype` at `location`, as
// torch.save pickles it: its typed class (`torch.FloatStorage`), or for a
// dtype with none `torch.UntypedStorage` of `numel` × element size bytes.
// Its `key` names it in messages; the caller binds its bytes and file.
Storage* make_tensor_storage(Graph& graph, Dtype dtype, int64_t numel, std::string key,
                             std::string_view location = "cpu");

// The call torch.save pickles for a contiguous tensor of `dtype` and `sizes`
// starting at element 0 of `storage` (`sizes` `{}` is a 0-dim tensor):
// `torch._utils._rebuild_tensor_v2(storage, 0, sizes, strides, False,
// OrderedDict())`, or over an untyped storage `_rebuild_tensor_v3(…,
// torch.<dtype>)`, as torch 2.x writes uint16 and float8 tensors. `as_tensor`
// reads it back as these.
Node* make_tensor(Graph& graph, Storage* storage, Dtype dtype, const Dims& sizes);

// An `OrderedDict` of `entries` (str keys), in their order: a state dict as
// the decoder makes one.
Node* make_state_dict(Graph& graph, const std::vector<std::pair<std::string, Node*>>& entries);

}  // namespace ckpt
