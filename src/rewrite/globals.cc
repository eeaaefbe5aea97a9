// The allowlist of globals a written checkpoint may name.
//
// Loading a pickle in Python imports every global it names and calls the
// REDUCE ones: `os.system` there runs a command. Our decoder runs nothing, but
// what we write is loaded by Python later, so nothing leaves this tool that
// torch's weights_only unpickler would not accept, save a few plain data
// classes that load without running user code.
#include <algorithm>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/globals.h"

namespace ckpt {
namespace {

const std::unordered_set<std::string>& benign_names() {
  static const std::unordered_set<std::string> names = {
      "collections.OrderedDict", "collections.defaultdict", "collections.Counter",
      "torch.nn.parameter.Parameter", "torch.serialization._get_layout", "torch.Size",
      "torch.Tensor", "torch.device", "torch._tensor._rebuild_from_type_v2",
      "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
      "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_sparse_csr_tensor",
      "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_wrapper_subclass",
      "torch._utils._rebuild_device_tensor_from_numpy", "torch._utils._rebuild_nested_tensor",
      "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.slice",
      "builtins.bytes", "builtins.bytearray", "__builtin__.set", "__builtin__.frozenset",
      "__builtin__.complex", "__builtin__.slice", "__builtin__.bytes", "__builtin__.bytearray",
      "_codecs.encode", "argparse.Namespace",
      "numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct", "numpy.ndarray",
      "numpy.dtype", "numpy._core.multiarray.scalar", "numpy._core.multiarray._reconstruct",
  };
  return names;
}

// `torch.<name>` globals that are data: dtypes, storage and tensor classes,
// layouts, quantization schemes.
bool is_torch_data_name(std::string_view name) {
  static const std::unordered_set<std::string_view> names = {
      "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
      "int32", "int", "int16", "short", "int8", "uint8", "bool", "complex32", "chalf",
      "complex64", "cfloat", "complex128", "cdouble", "qint8", "quint8", "qint32", "quint4x2",
      "quint2x4", "uint16", "uint32", "uint64", "float8_e5m2", "float8_e4m3fn",
      "float8_e5m2fnuz", "float8_e4m3fnuz", "strided", "sparse_coo", "sparse_csr",
      "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "per_tensor_affine",
      "per_channel_affine", "per_channel_affine_float_qparams", "per_tensor_symmetric",
      "per_channel_symmetric", "contiguous_format", "channels_last", "channels_last_3d",
      "preserve_format",
  };
  auto ends_with = [&](std::string_view suffix) {
    return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix &&
           name.find('.') == std::string_view::npos;
  };
  return names.count(name) != 0 || ends_with("Storage") || ends_with("Tensor");
}

}  // namespace

bool is_benign_global(const std::string& qualified_name) {
  if (benign_names().count(qualified_name) != 0) {
    return true;
  }
  std::string_view name(qualified_name);
  if (name.rfind("torch.", 0) == 0 && is_torch_data_name(name.substr(6))) {
    return true;
  }
  // numpy >= 1.25 pickles dtypes as numpy.dtypes.Float64DType and friends.
  return name.rfind("numpy.dtypes.", 0) == 0 && name.size() > 18 &&
         name.substr(name.size() - 5) == "DType";
}

namespace {

// The children of a node in pickle order, by index, so that a depth-first
// walk can keep just (node, next child) per level and spell the path of a
// node only when it is asked for.
size_t child_count(const Node* node) {
  return 3 + node->items.size() + 2 * node->entries.size() + 1 + 2;
}

// A node without children: a str, a number, a global's name… (The decoder
// refuses BUILD, APPEND and SETITEM on these kinds.)
bool is_leaf(const Node* node) {
  switch (node->kind) {
    case NodeKind::k_none:
    case NodeKind::k_bool:
    case NodeKind::k_int:
    case NodeKind::k_float:
    case NodeKind::k_str:
    case NodeKind::k_bytes:
    case NodeKind::k_bytearray:
    case NodeKind::k_global:
      return true;
    default:
      return false;
  }
}

const Node* child_at(const Node* node, size_t i) {
  if (i < 3) {
    return i == 0 ? node->callable : i == 1 ? node->args : node->kwargs;
  }
  i -= 3;
  if (i < node->items.size()) {
    return node->items[i];
  }
  i -= node->items.size();
  if (i < 2 * node->entries.size()) {
    return i % 2 == 0 ? node->entries[i / 2].first : node->entries[i / 2].second;
  }
  i -= 2 * node->entries.size();
  if (i == 0) {
    return node->state;
  }
  if (node->storage == nullptr) {
    return nullptr;
  }
  return i == 1 ? node->storage->type : node->storage->location;
}

// The path step from `node` to its child `i`, in Python subscript form.
std::string step_to(const Node* node, size_t i) {
  if (i < 3) {
    return "";  // a call's callable and arguments sit where the call does
  }
  i -= 3;
  if (i < node->items.size()) {
    return "[" + std::to_string(i) + "]";
  }
  i -= node->items.size();
  if (i < 2 * node->entries.size()) {
    const Node* key = node->entries[i / 2].first;
    return i % 2 == 0 ? "" : key->is_str() ? "[\"" + key->text + "\"]" : "[…]";
  }
  return i == 2 * node->entries.size() ? ".__dict__" : "";
}

struct Frame {
  const Node* node;
  size_t next;  // the child to visit next
};

std::string path_of(const std::vector<Frame>& stack) {
  constexpr size_t k_max_steps = 16;
  std::string path;
  size_t first = stack.size() > k_max_steps ? stack.size() - k_max_steps : 0;
  for (size_t k = first; k < stack.size(); ++k) {
    path += step_to(stack[k].node, stack[k].next - 1);
  }
  path = (first > 0 ? "…" : "") + path;
  return path.empty() ? "(top level)" : path;
}

}  // namespace

std::vector<GlobalUse> list_globals(const Node* root) {
  std::vector<GlobalUse> uses;
  std::unordered_map<std::string, size_t> index;
  auto record = [&](const Node* global, const std::vector<Frame>& stack) {
    std::string name = qualified_name(*global);
    auto [it, inserted] = index.emplace(name, uses.size());
    if (inserted) {
      uses.push_back({name, path_of(stack), 0, is_benign_global(name)});
    }
    ++uses[it->second].uses;
  };
  uint32_t epoch = next_epoch();
  root->visit_epoch = epoch;
  std::vector<Frame> stack{{root, 0}};
  if (root->kind == NodeKind::k_global) {
    record(root, {});
  }
  while (!stack.empty()) {
    Frame& frame = stack.back();
    if (frame.next == child_count(frame.node)) {
      stack.pop_back();
      continue;
    }
    const Node* child = child_at(frame.node, frame.next++);
    if (child == nullptr || child->visit_epoch == epoch) {
      continue;
    }
    child->visit_epoch = epoch;
    if (child->kind == NodeKind::k_global) {
      record(child, stack);
    }
    if (!is_leaf(child)) {  // a third of a state dict's nodes: no frame for them
      stack.push_back({child, 0});
    }
  }
  return uses;
}

namespace {

bool refused(const GlobalUse& use, const std::vector<std::string>& allowed) {
  return !use.benign && std::find(allowed.begin(), allowed.end(), use.name) == allowed.end();
}

}  // namespace

bool has_refused_global(const std::vector<GlobalUse>& uses,
                        const std::vector<std::string>& allowed) {
  return std::any_of(uses.begin(), uses.end(),
                     [&](const GlobalUse& use) { return refused(use, allowed); });
}

void check_output_globals(const Node* root, const std::vector<std::string>& allowed) {
  for (const GlobalUse& use : list_globals(root)) {
    if (refused(use, allowed)) {
      throw FormatError("refusing to write global '" + use.name + "' at " + use.first_path +
                        ": loading it in Python would import and may run it; use --extract to "
                        "write only the model's state dict, or --allow-global " + use.name +
                        " if you trust it");
    }
  }
}

}  // namespace ckpt
