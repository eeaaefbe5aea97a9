// Fuzz target: the DCP `.metadata` decoder (`parse_dcp_metadata`) and the
// nesting built from it (`build_dcp_nested`). Any bytes must give metadata or
// an Error; metadata must keep its promises: every tensor's chunks lie inside
// it, hold its elements exactly, and name a plain file of the folder; every
// path step is a key or an index below the item count.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "ckpt/dcp_metadata.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  DcpMetadata metadata;
  try {
    metadata = parse_dcp_metadata(fuzz::span_of(data, size), "run/.metadata");
  } catch (const Error&) {
    return 0;
  }
  CKPT_FUZZ_CHECK(!metadata.profile.empty());
  auto plain = [](const std::string& name) {
    return !name.empty() && name.find('/') == std::string::npos && name != "..";
  };
  for (const DcpItem& item : metadata.items) {
    if (!item.is_tensor) {
      CKPT_FUZZ_CHECK(plain(item.where.relative_path));
      continue;
    }
    int64_t numel = 1;
    for (int64_t dim : item.size) {
      CKPT_FUZZ_CHECK(dim >= 0);
      numel *= dim;
    }
    int64_t covered = 0;
    for (const DcpChunk& chunk : item.chunks) {
      CKPT_FUZZ_CHECK(chunk.offsets.size() == item.size.size());
      CKPT_FUZZ_CHECK(chunk.sizes.size() == item.size.size());
      for (size_t d = 0; d < item.size.size(); ++d) {
        CKPT_FUZZ_CHECK(chunk.offsets[d] >= 0 && chunk.sizes[d] > 0);
        CKPT_FUZZ_CHECK(chunk.offsets[d] + chunk.sizes[d] <= item.size[d]);
      }
      CKPT_FUZZ_CHECK(plain(chunk.where.relative_path));
      covered += chunk.numel();
    }
    CKPT_FUZZ_CHECK(covered == numel);
    for (const DcpPathStep& step : item.path) {
      CKPT_FUZZ_CHECK(!step.is_index ||
                      (step.index >= 0 &&
                       static_cast<uint64_t>(step.index) < metadata.items.size()));
    }
  }
  Graph graph;
  std::vector<Node*> leaves;
  for (size_t i = 0; i < metadata.items.size(); ++i) {
    leaves.push_back(graph.make_int(static_cast<int64_t>(i)));
  }
  try {
    Node* root = build_dcp_nested(graph, metadata, leaves, "run/.metadata");
    CKPT_FUZZ_CHECK(root != nullptr && root->kind == NodeKind::k_dict);
  } catch (const Error&) {
  }
  return 0;
}
