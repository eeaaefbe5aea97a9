// Storage location tags (`cpu`, `cuda:3`, …): which ones torch.load can
// restore, as its registry of location tags (torch/serialization.py's
// `_package_registry`) knows them, and which this machine can restore.
#pragma once

#include <string>

namespace ckpt {

// Why torch.load cannot restore a storage tagged `tag` on any machine: its
// registry restores `cpu`, `meta`, `mps`, `cuda`/`cuda:N` (torch 1.13) and
// `xpu`/`xpu:N`, `hpu`/`hpu:N` (torch 2.x); anything else (`gpu0`, `Cuda:0`,
// `cuda:x`, ``) fails with "don't know how to restore data location". Empty
// when the tag is one of those.
std::string location_tag_problem(const std::string& tag);

// Throws `Error` (usage) when `--location` `value` is neither `keep` nor a tag
// torch restores, with the accepted forms (and the lower-case spelling when
// that is one).
void check_location_option(const std::string& value);

// Why torch.load on this machine cannot restore a storage tagged `tag`
// without `map_location`: an unknown tag, or a device this machine lacks
// (asks the LibTorch plugin for `cuda`; `mps`, `xpu` and `hpu` are taken as
// absent, since ckpt-convert's LibTorch has none of them). Empty when it can.
std::string location_unavailable_here(const std::string& tag);

}  // namespace ckpt
