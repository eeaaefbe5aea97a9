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

// How a node was first reached: its container and the step from there.
struct Parent {
  const Node* node = nullptr;
  std::string step;
};

// The path of `node` as Python subscripts, built on demand from the parent
// links (storing a path per node would cost memory quadratic in the depth).
std::string path_to(const Node* node, const std::unordered_map<const Node*, Parent>& parents) {
  constexpr int k_max_steps = 16;
  std::vector<const std::string*> steps;
  bool cut = false;
  for (auto it = parents.find(node); it != parents.end() && it->second.node != nullptr;
       it = parents.find(it->second.node)) {
    if (steps.size() == k_max_steps) {
      cut = true;
      break;
    }
    steps.push_back(&it->second.step);
  }
  std::string path = cut ? "…" : "";
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    path += **step;
  }
  return path.empty() ? "(top level)" : path;
}

}  // namespace

std::vector<GlobalUse> list_globals(const Node* root) {
  std::vector<GlobalUse> uses;
  std::unordered_map<std::string, size_t> index;
  std::unordered_map<const Node*, Parent> parents{{root, {}}};
  for_each_reachable(root, [&](const Node* node) {
    auto link = [&](const Node* child, std::string step) {
      if (child != nullptr && parents.count(child) == 0) {
        parents.emplace(child, Parent{node, std::move(step)});
      }
    };
    link(node->callable, "");
    link(node->args, "");
    for (size_t i = 0; i < node->items.size(); ++i) {
      link(node->items[i], "[" + std::to_string(i) + "]");
    }
    for (const auto& [key, value] : node->entries) {
      link(value, key->is_str() ? "[\"" + key->text + "\"]" : "[…]");
    }
    link(node->state, ".__dict__");
    if (node->kind == NodeKind::k_global) {
      std::string name = qualified_name(*node);
      auto [it, inserted] = index.emplace(name, uses.size());
      if (inserted) {
        uses.push_back({name, path_to(node, parents), 0, is_benign_global(name)});
      }
      ++uses[it->second].uses;
    }
    return true;
  });
  return uses;
}

void check_output_globals(const Node* root, const std::vector<std::string>& allowed) {
  for (const GlobalUse& use : list_globals(root)) {
    bool explicitly_allowed = std::find(allowed.begin(), allowed.end(), use.name) != allowed.end();
    if (!use.benign && !explicitly_allowed) {
      throw FormatError("refusing to write global '" + use.name + "' at " + use.first_path +
                        ": loading it in Python would import and may run it; use --extract to "
                        "write only the model's state dict, or --allow-global " + use.name +
                        " if you trust it");
    }
  }
}

}  // namespace ckpt
