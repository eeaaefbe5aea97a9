// Fuzz target: the HF shard index parser (`parse_hf_index`). Any bytes must
// give an index or an Error; an index must keep its promises: a non-empty
// weight_map, each shard once, each a plain name (no `..` component, not
// absolute, no drive prefix) of the index's format.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "common.h"
#include "ckpt/hf_index.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan bytes = fuzz::span_of(data, size);
  looks_like_hf_index(bytes);
  HfIndex index;
  try {
    index = parse_hf_index(bytes, "model.safetensors.index.json");
  } catch (const Error&) {
    return 0;
  }
  CKPT_FUZZ_CHECK(!index.weight_map.empty() && !index.shards.empty());
  CKPT_FUZZ_CHECK(index.format == HfShardFormat::k_safetensors);
  std::set<std::string> shards(index.shards.begin(), index.shards.end());
  CKPT_FUZZ_CHECK(shards.size() == index.shards.size());
  for (const auto& [tensor, shard] : index.weight_map) {
    CKPT_FUZZ_CHECK(shards.count(shard) == 1);
    CKPT_FUZZ_CHECK(!shard.empty() && shard[0] != '/' && shard[0] != '\\');
    CKPT_FUZZ_CHECK(shard.find('\0') == std::string::npos);
    CKPT_FUZZ_CHECK(shard != ".." && shard.rfind("../", 0) != 0 &&
                    shard.find("/../") == std::string::npos);
    CKPT_FUZZ_CHECK(shard.size() >= 12 &&
                    shard.compare(shard.size() - 12, 12, ".safetensors") == 0);
    is_hf_shard_like(shard, index.shards.front());
  }
  return 0;
}
