// Which globals (classes and functions a pickle names) a written checkpoint
// may contain, and where globals sit in a graph.
#pragma once

#include <string>
#include <vector>

#include "ckpt/graph.h"

namespace ckpt {

// True for torch's own weights_only allowlist (torch 1.13 and 2.x) and the
// benign data classes we pass through: argparse.Namespace, numpy scalars,
// dtypes and arrays, builtins set/frozenset/complex/slice/bytes/bytearray,
// collections.OrderedDict/defaultdict/Counter, `_codecs.encode`.
bool is_benign_global(const std::string& qualified_name);

struct GlobalUse {
  std::string name;        // `module.qualname`
  std::string first_path;  // where it first sits, e.g. `["args"]`
  size_t uses = 0;
  bool benign = false;
};

// Every global reachable from `root`, in order of first appearance.
std::vector<GlobalUse> list_globals(const Node* root);

// Throws `FormatError` for the first global reachable from `root` that is
// neither benign nor in `allowed`: it names the global, where it sits, and
// how to proceed (`--extract`, `--allow-global NAME`).
void check_output_globals(const Node* root, const std::vector<std::string>& allowed);

// True when one of `uses` is neither benign nor in `allowed`. A graph whose
// globals (listed before it changed) pass has nothing for
// `check_output_globals` to find once changes that add no global are made.
bool has_refused_global(const std::vector<GlobalUse>& uses,
                        const std::vector<std::string>& allowed);

}  // namespace ckpt
