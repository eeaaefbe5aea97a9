// The `.metadata` file of a torch Distributed Checkpoint (DCP) folder: a
// plain `pickle.dump` of a `Metadata` dataclass that lists every item saved
// (tensors with their chunks, non-tensor "bytes" items), where each chunk or
// item lies (`_StorageInfo`: file, offset, length) and, from torch 2.0, how
// the nested state dict was flattened (`planner_data`). Decoding it is a pure
// function over bytes with every check that needs no `.distcp` file; the
// reader (src/formats/dcp.cc) then locates the chunks and builds the graph.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/dtype.h"
#include "ckpt/graph.h"
#include "ckpt/tensor.h"

namespace ckpt {

// The largest `.metadata` read: a model of 100,000 tensors on 1,000 ranks
// pickles to ~50 MB.
constexpr uint64_t k_dcp_metadata_max_bytes = 256ull << 20;

// Where one item's bytes are: `length` bytes at `offset` of `relative_path`
// (a file name in the checkpoint folder).
struct DcpStorageInfo {
  std::string relative_path;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One chunk of a tensor: the box [`offsets`, `offsets` + `sizes`) of the
// full tensor, stored at `where`.
struct DcpChunk {
  Dims offsets;
  Dims sizes;
  DcpStorageInfo where;
  int64_t numel() const;
};

// One step of a `planner_data` path: a dict key or a list index.
struct DcpPathStep {
  bool is_index = false;
  int64_t index = 0;
  std::string key;
};

// One entry of `state_dict_metadata`, in its order.
struct DcpItem {
  std::string fqn;                 // the (flattened) key
  bool is_tensor = false;
  // A tensor (`TensorStorageMetadata`): its dtype, global shape and chunks,
  // the empty ones left out.
  Dtype dtype = Dtype::k_float32;
  Dims size;
  std::vector<DcpChunk> chunks;
  // A bytes item (`BytesStorageMetadata`): where its torch.save blob is.
  DcpStorageInfo where;
  // Its place in the nested state dict (`planner_data[fqn]`); empty when
  // there is no planner_data (torch 1.13) or it does not name the key: the
  // item is then a top-level key.
  std::vector<DcpPathStep> path;
};

struct DcpMetadata {
  // The torch versions whose class paths the pickle names: "1.13"
  // (`torch.distributed._shard.checkpoint`), "2.0-2.2"
  // (`torch.distributed.checkpoint`, TensorProperties still in `_shard`),
  // "2.3+" (TensorProperties in `torch.distributed.checkpoint.metadata`),
  // "2.0+" (no tensor tells 2.0-2.2 from 2.3+).
  std::string profile;
  std::string version;             // `Metadata.version` (recent torch), else ""
  bool has_storage_meta = false;   // `storage_meta` is set (2.4-era and later)
  bool has_planner_data = false;
  std::vector<DcpItem> items;
  std::vector<std::string> files;  // every `relative_path` named, each once, sorted
};

// Decodes and checks the `.metadata` bytes `bytes`; `name` (its path) is named
// first in every message. Nothing in the pickle is run: every global it names
// must be a DCP class of torch 1.13 to 2.x (their module paths all accepted),
// `torch.Size`, a dtype, `torch.serialization._get_layout`, `pathlib`'s
// `PosixPath` or `builtins.getattr` of a memory-format enum member. Refuses
// (throws `Error` `<name>: <what>: <cause>`): any other global (named, as
// `posix.system`); a root that is no `Metadata`; a tensor whose chunks leave
// it, overlap, or do not cover it; a chunk or item without a `storage_data`
// entry, or with two; a stream transform (`transform_descriptors`, torch ≥
// 2.7 `_extensions`); a `relative_path` that is no plain file name; a
// `planner_data` path that is empty or holds other than str and int.
DcpMetadata parse_dcp_metadata(ByteSpan bytes, const std::string& name);

// The nested object `dcp_to_torch_save` (torch ≥ 2.3) rebuilds from the
// items of `metadata` whose values are `leaves` (one per item, in order), as
// `torch.distributed.checkpoint._traverse.set_element` does: each item at its
// `path`, a container made on the way a dict when the next step is a key and a
// list when it is an index (short lists filled with None); an item with no
// path at the top level under its fqn. The root is a plain dict. Throws
// `Error` naming `name` when two items land on one place, or a path runs
// through a leaf or through a container of the other kind.
Node* build_dcp_nested(Graph& graph, const DcpMetadata& metadata,
                       const std::vector<Node*>& leaves, const std::string& name);

}  // namespace ckpt
