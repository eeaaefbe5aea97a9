// Location tags, as torch.load restores them. torch 1.13's
// serialization.py registers `_cpu_deserialize` (tag == 'cpu'),
// `_cuda_deserialize` (startswith('cuda'), then `torch.device(tag)` must
// parse: `cuda` or `cuda:N`), `_mps_deserialize` (== 'mps') and
// `_meta_deserialize` (== 'meta'); torch 2.x adds `xpu` and `hpu` through
// `_backend_tag` (a `torch.device` string of that type). A tag none of them
// takes makes torch.load fail unless the caller passes `map_location`, so a
// file written with one is not a file people can load.
#include "ckpt/location.h"

#include <algorithm>
#include <cctype>

#include "ckpt/error.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

// `type` alone or `type:N`, N a device index as torch.device parses it
// (digits, no sign, no leading zero).
bool is_indexed_tag(const std::string& tag, const std::string& type) {
  if (tag == type) {
    return true;
  }
  if (tag.size() <= type.size() + 1 || tag.compare(0, type.size(), type) != 0 ||
      tag[type.size()] != ':') {
    return false;
  }
  std::string index = tag.substr(type.size() + 1);
  return index.size() <= 9 && index.find_first_not_of("0123456789") == std::string::npos &&
         (index.size() == 1 || index[0] != '0');
}

const char* const k_accepted = "cpu, cuda, cuda:N, mps, meta, xpu[:N], hpu[:N]";

}  // namespace

std::string location_tag_problem(const std::string& tag) {
  if (tag == "cpu" || tag == "meta" || tag == "mps" || is_indexed_tag(tag, "cuda") ||
      is_indexed_tag(tag, "xpu") || is_indexed_tag(tag, "hpu")) {
    return "";
  }
  return "torch.load does not know how to restore location '" + tag + "' (it restores " +
         k_accepted + ")";
}

void check_location_option(const std::string& value) {
  if (value == "keep" || location_tag_problem(value).empty()) {
    return;
  }
  std::string lower = value;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string hint = lower != value && location_tag_problem(lower).empty()
                         ? ", did you mean '" + lower + "'?"
                         : " (torch.load could not restore it without map_location)";
  throw Error("invalid --location '" + value + "': expected keep or a tag torch restores: " +
                  k_accepted + hint,
              ExitStatus::k_usage);
}

std::string location_unavailable_here(const std::string& tag) {
  std::string problem = location_tag_problem(tag);
  if (!problem.empty() || tag == "cpu" || tag == "meta") {
    return problem;
  }
  if (tag.compare(0, 4, "cuda") != 0) {
    return "location '" + tag + "' is a device this machine does not have";
  }
  try {
    require_device(tag);
  } catch (const Error& e) {
    return "location '" + tag + "' cannot be restored on this machine: " + e.what();
  }
  return "";
}

}  // namespace ckpt
