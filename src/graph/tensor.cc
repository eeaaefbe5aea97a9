// Reads torch's tensor rebuild calls (torch/_utils.py) into `TensorRef`s and
// checks them against their storage, so that no later stage can index past a
// storage's bytes however the sizes, strides and offsets were forged.
#include "ckpt/tensor.h"

#include <algorithm>
#include <string>

#include "ckpt/error.h"

namespace ckpt {
namespace {

enum class Rebuild { k_none, k_v1, k_v2, k_v3, k_qtensor, k_parameter, k_from_type };

Rebuild rebuild_kind(const Node* callable) {
  if (callable == nullptr || callable->kind != NodeKind::k_global) {
    return Rebuild::k_none;
  }
  if (callable->text == "torch._tensor" && callable->name == "_rebuild_from_type_v2") {
    return Rebuild::k_from_type;
  }
  if (callable->text != "torch._utils") {
    return Rebuild::k_none;
  }
  std::string_view name = callable->name;
  if (name == "_rebuild_tensor") return Rebuild::k_v1;
  if (name == "_rebuild_tensor_v2") return Rebuild::k_v2;
  if (name == "_rebuild_tensor_v3") return Rebuild::k_v3;
  if (name == "_rebuild_qtensor") return Rebuild::k_qtensor;
  if (name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state") {
    return Rebuild::k_parameter;
  }
  return Rebuild::k_none;
}

[[noreturn]] void malformed(const Node* callable, const std::string& why) {
  throw FormatError("malformed " + qualified_name(*callable) + " call: " + why);
}

int64_t int_arg(const Node* callable, const Node* node, const char* what) {
  if (node->kind == NodeKind::k_bool) {
    return node->boolean ? 1 : 0;
  }
  if (node->kind != NodeKind::k_int || !node->text.empty()) {
    malformed(callable, std::string(what) + " is not a 64-bit integer");
  }
  return node->integer;
}

Dims int_tuple(const Node* callable, const Node* node, const char* what) {
  // torch.Size arrives as REDUCE(torch.Size, ((…),)).
  if (node->kind == NodeKind::k_call && node->callable != nullptr &&
      node->callable->is_global("torch", "Size") && node->args->items.size() == 1) {
    node = node->args->items[0];
  }
  if (node->kind != NodeKind::k_tuple && node->kind != NodeKind::k_list) {
    malformed(callable, std::string(what) + " is not a tuple");
  }
  Dims values;
  for (const Node* item : node->items) {
    values.push_back(int_arg(callable, item, what));
  }
  return values;
}

// The storage, offset, size and stride that every rebuild function starts with.
TensorRef storage_view(const Node* callable, const NodeList& args, size_t needed) {
  if (args.size() < needed) {
    malformed(callable, "takes at least " + std::to_string(needed) + " arguments, got " +
                            std::to_string(args.size()));
  }
  if (args[0]->kind != NodeKind::k_storage) {
    malformed(callable, "first argument is not a storage");
  }
  TensorRef ref;
  ref.storage = args[0]->storage;
  ref.dtype = ref.storage->dtype;
  ref.offset = int_arg(callable, args[1], "storage offset");
  ref.sizes = int_tuple(callable, args[2], "size");
  ref.strides = int_tuple(callable, args[3], "stride");
  return ref;
}

void check_bounds(const Node* callable, const TensorRef& ref) {
  if (ref.sizes.size() != ref.strides.size()) {
    malformed(callable, std::to_string(ref.sizes.size()) + " sizes but " +
                            std::to_string(ref.strides.size()) + " strides");
  }
  if (ref.offset < 0) {
    malformed(callable, "negative storage offset " + std::to_string(ref.offset));
  }
  for (size_t i = 0; i < ref.sizes.size(); ++i) {
    if (ref.sizes[i] < 0 || ref.strides[i] < 0) {
      malformed(callable, "negative size or stride in dimension " + std::to_string(i));
    }
  }
  uint64_t storage_bytes = static_cast<uint64_t>(ref.storage->numel) *
                           static_cast<uint64_t>(element_size(ref.storage->dtype));
  uint64_t extent = ref.byte_extent();  // throws on overflow
  if (extent > storage_bytes) {
    throw FormatError("tensor needs " + std::to_string(extent) + " bytes of storage '" +
                      ref.storage->key + "', which holds " + std::to_string(storage_bytes));
  }
}

std::optional<TensorRef> interpret(const Node* callable, const Node* args_node) {
  Rebuild kind = rebuild_kind(callable);
  if (kind == Rebuild::k_none) {
    return std::nullopt;
  }
  if (args_node == nullptr || args_node->kind != NodeKind::k_tuple) {
    malformed(callable, "arguments are not a tuple");
  }
  const NodeList& args = args_node->items;
  TensorRef ref;
  switch (kind) {
    case Rebuild::k_v1:
      ref = storage_view(callable, args, 4);
      break;
    case Rebuild::k_v2:
      ref = storage_view(callable, args, 5);
      ref.requires_grad = int_arg(callable, args[4], "requires_grad") != 0;
      break;
    case Rebuild::k_v3: {
      ref = storage_view(callable, args, 7);
      ref.requires_grad = int_arg(callable, args[4], "requires_grad") != 0;
      const Node* dtype = args[6];
      std::optional<Dtype> parsed;
      if (dtype->kind == NodeKind::k_global && dtype->text == "torch") {
        parsed = dtype_of_torch_name(dtype->name);
      }
      if (!parsed) {
        malformed(callable, "unknown dtype");
      }
      ref.dtype = *parsed;
      break;
    }
    case Rebuild::k_qtensor:
      ref = storage_view(callable, args, 7);
      ref.requires_grad = int_arg(callable, args[5], "requires_grad") != 0;
      ref.quantized = true;
      break;
    case Rebuild::k_parameter: {
      if (args.size() < 2 || args[0]->kind != NodeKind::k_call) {
        malformed(callable, "first argument is not a tensor");
      }
      std::optional<TensorRef> inner = interpret(args[0]->callable, args[0]->args);
      if (!inner) {
        malformed(callable, "first argument is not a tensor");
      }
      ref = *inner;
      ref.requires_grad = int_arg(callable, args[1], "requires_grad") != 0;
      ref.parameter = true;
      break;
    }
    case Rebuild::k_from_type: {
      // _rebuild_from_type_v2(func, type, args, state)
      if (args.size() < 3) {
        malformed(callable, "takes 4 arguments");
      }
      std::optional<TensorRef> inner = interpret(args[0], args[2]);
      if (!inner) {
        return std::nullopt;
      }
      ref = *inner;
      break;
    }
    case Rebuild::k_none:
      return std::nullopt;
  }
  if (kind != Rebuild::k_parameter && kind != Rebuild::k_from_type) {
    if (ref.storage->dtype != Dtype::k_untyped && element_size(ref.storage->dtype) != element_size(ref.dtype)) {
      malformed(callable, "dtype does not match its storage");
    }
    check_bounds(callable, ref);
  }
  return ref;
}

}  // namespace

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t size : sizes) {
    n *= size;
  }
  return n;
}

uint64_t TensorRef::byte_extent() const {
  uint64_t last = static_cast<uint64_t>(offset);
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) {
      return 0;
    }
    uint64_t reach = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(sizes[i] - 1), static_cast<uint64_t>(strides[i]), &reach) ||
        __builtin_add_overflow(last, reach, &last)) {
      throw FormatError("tensor sizes and strides overflow 64 bits");
    }
  }
  uint64_t bytes = 0;
  if (__builtin_add_overflow(last, 1, &last) ||
      __builtin_mul_overflow(last, static_cast<uint64_t>(element_size(dtype)), &bytes)) {
    throw FormatError("tensor sizes and strides overflow 64 bits");
  }
  return bytes;
}

std::optional<TensorRef> as_tensor(const Node* node) {
  if (node->kind != NodeKind::k_call) {
    return std::nullopt;
  }
  std::optional<TensorRef> ref = interpret(node->callable, node->args);
  if (ref) {
    ref->node = node;
  }
  return ref;
}

bool is_tensor(const Node* node) {
  return node->kind == NodeKind::k_call && rebuild_kind(node->callable) != Rebuild::k_none;
}

std::vector<TensorRef> tensors_reachable(const Node* root, size_t expected) {
  std::vector<TensorRef> tensors;
  tensors.reserve(expected);
  for_each_reachable(root, [&](const Node* node) {
    if (std::optional<TensorRef> tensor = as_tensor(node)) {
      tensors.push_back(std::move(*tensor));
      return false;
    }
    return true;
  });
  return tensors;
}

Storage* make_tensor_storage(Graph& graph, Dtype dtype, int64_t numel, std::string key,
                             std::string_view location) {
  std::string_view type = storage_class_name(dtype);
  Storage* storage = graph.make_storage();
  storage->key = std::move(key);
  storage->type = graph.make_global("torch", type.empty() ? "UntypedStorage" : type);
  storage->location = graph.make_str(location);
  storage->dtype = type.empty() ? Dtype::k_untyped : dtype;
  storage->numel = type.empty() ? numel * element_size(dtype) : numel;
  return storage;
}

Node* make_tensor(Graph& graph, Storage* storage, Dtype dtype, const Dims& sizes) {
  auto int_tuple = [&](const Dims& values) {
    Node* tuple = graph.make(NodeKind::k_tuple);
    for (int64_t value : values) {
      graph.push_back(tuple->items, graph.make_int(value));
    }
    return tuple;
  };
  Dims strides = sizes;
  int64_t stride = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(sizes[i], 1);
  }
  Node* storage_ref = graph.make(NodeKind::k_storage);
  storage_ref->storage = storage;
  Node* hooks = graph.make(NodeKind::k_dict);
  hooks->callable = graph.make_global("collections", "OrderedDict");
  bool typed = storage->dtype != Dtype::k_untyped;
  std::vector<Node*> args = {storage_ref, graph.make_int(0), int_tuple(sizes), int_tuple(strides),
                             graph.make(NodeKind::k_bool), hooks};
  if (!typed) {
    args.push_back(graph.make_global("torch", dtype_name(dtype)));
  }
  Node* call = graph.make(NodeKind::k_call);
  call->callable =
      graph.make_global("torch._utils", typed ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
  call->args = graph.make(NodeKind::k_tuple);
  graph.assign(call->args->items, args.data(), args.size());
  return call;
}

Node* make_state_dict(Graph& graph, const std::vector<std::pair<std::string, Node*>>& entries) {
  Node* dict = graph.make(NodeKind::k_dict);
  dict->callable = graph.make_global("collections", "OrderedDict");
  for (const auto& [key, value] : entries) {
    graph.push_back(dict->entries, NodeEntry{graph.make_str(key), value});
  }
  return dict;
}

}  // namespace ckpt
