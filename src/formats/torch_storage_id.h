// What the two torch readers (torch_zip.cc, torch_legacy.cc) share: the
// storage persistent id `('storage', type, key, location, numel[, view])`
// parsed and checked, the `Storage` it stands for, and the location prefix
// of their messages. Internal to src/formats/.
#pragma once

#include <cstddef>
#include <string>

#include "ckpt/error.h"
#include "ckpt/graph.h"

namespace ckpt {

// What a storage persistent id says.
struct StorageId {
  Node* type = nullptr;
  Node* location = nullptr;
  Dtype dtype = Dtype::k_untyped;
  std::string key;
  int64_t numel = 0;
};

// Unpacks `('storage', type, key, location, numel[, view])`; returns the
// fields after the tag (in the tuple `id`, which has `field_count` of them),
// or throws `FormatError` naming what is wrong.
Node* const* storage_id_fields(const Node* id, size_t field_count);

// The fields of a storage persistent id, checked. `fields` are the tuple's
// items after the 'storage' tag: type, key, location, numel[, view]. Throws
// `FormatError`.
StorageId parse_storage_id(Node* const* fields);

// The storage `id` stands for: `known`, the one made before for its key
// (which must agree, else `FormatError`), or a new one in `graph`.
Storage* storage_for(Graph& graph, const StorageId& id, Storage* known);

// A `k_storage` node of `graph` for `storage`.
Node* storage_node(Graph& graph, Storage* storage);

}  // namespace ckpt
