// A path to an object in a checkpoint as JSON, for the reports of convert and
// inspect: an array of steps a script can follow without parsing Python
// subscripts, `["model", 0]`. A dict key is its string (or its integer), a
// list index its integer, an argument of a reconstructed object `{"arg": i}`,
// its BUILD state `{"attr": "__dict__"}`, a key of another type null.
#pragma once

#include <nlohmann/json.hpp>

#include <vector>

#include "ckpt/rewrite.h"

namespace ckpt {

inline nlohmann::ordered_json path_json(const std::vector<PathStep>& steps) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const PathStep& step : steps) {
    switch (step.kind) {
      case PathStep::Kind::k_key: out.push_back(step.key); break;
      case PathStep::Kind::k_int_key:
      case PathStep::Kind::k_index: out.push_back(step.index); break;
      case PathStep::Kind::k_arg: out.push_back({{"arg", step.index}}); break;
      case PathStep::Kind::k_state: out.push_back({{"attr", "__dict__"}}); break;
      case PathStep::Kind::k_other_key: out.push_back(nullptr); break;
    }
  }
  return out;
}

}  // namespace ckpt
