// HuggingFace sharded checkpoints on the way out: the `max_shard_size` text,
// the split of a state dict into shards, the shard and index file names, the
// index JSON, and the files a new write would replace or leave stale.
//
// Pure functions over names and sizes (only `stale_shard_files` reads a
// folder); the writer that streams tensors into the shard files sits on top.
// The rules are huggingface_hub's (`serialization/_base.py`,
// `split_state_dict_into_shards_factory` and `parse_size_to_int`;
// `constants.py` for the names) and transformers'
// `save_pretrained` (the index as `json.dumps(index, indent=2, sort_keys=True)`
// and the stale-shard pattern `<name>-\d{5}-of-\d{5}`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ckpt {

// The most shards the names' 5-digit `-00001-of-00003` fields can number.
constexpr size_t k_max_shard_count = 99'999;

// The size `text` names, in bytes, read as huggingface_hub's
// `parse_size_to_int` reads it, plus binary units and plain integers:
// surrounding ASCII whitespace is stripped; a whole decimal number is bytes
// (`5000`); otherwise a number (fraction and exponent allowed, `1.5`, `2e3`),
// optional spaces, and a unit: `KB`, `MB`, `GB`, `TB` (10^3..10^12) or `KiB`,
// `MiB`, `GiB`, `TiB` (2^10..2^40), any case, the result truncated as Python's
// `int(float(number) * unit)` truncates it. Throws an `Error` with
// `ExitStatus::k_usage` whose message starts `shard size '<text>': ` and ends
// with what is accepted, when `text` is empty, not a number, NaN or infinite,
// negative, zero (or under one byte), 2^63 bytes or more, or has an unknown
// unit: `5G` gets "did you mean '5GB'?", and a capital prefix before a small
// `b` (`5Gb`, `10Kb`) is refused as bits.
uint64_t parse_shard_size(std::string_view text);

// One entry of a state dict, as the split sees it.
struct ShardItem {
  std::string name;
  uint64_t bytes = 0;       // its whole storage's size (`untyped_storage().nbytes()`)
  uint64_t storage_id = 0;  // items with the same id share one storage
};

// A state dict split into shards.
struct ShardPlan {
  // Shard k (written as file k + 1 of `shards.size()`): indices into the
  // input, in input order.
  std::vector<std::vector<size_t>> shards;
  // The sum of the distinct storages' bytes: the index's `total_size`.
  uint64_t total_size = 0;
};

// Splits `items` into shards of at most `max_shard_size` bytes exactly as
// huggingface_hub's `split_state_dict_into_shards_factory` does: in input
// order, an item whose `storage_id` was seen before joins the shard of the
// first item with that id and counts nothing (its `bytes` are ignored); an
// item over `max_shard_size` becomes a shard of its own at once, while the
// shard being filled stays open (so it comes after); otherwise, when the
// current shard's bytes + the item's would exceed `max_shard_size` (strictly),
// the current shard is closed and a new one begun; then the item is added.
// The last non-empty shard closes the list. No items give no shards. Throws a
// `FormatError` when the total size would not fit 64 bits.
ShardPlan plan_shards(const std::vector<ShardItem>& items, uint64_t max_shard_size);

// The two formats a sharded checkpoint comes in.
enum class ShardFormat {
  k_safetensors,  // model.safetensors
  k_pt,           // pytorch_model.bin (torch.save)
};

// The file name of shard `index` (0-based) of `count`: `model.safetensors` /
// `pytorch_model.bin` when `count` is 1, else `model-00001-of-00003.safetensors`
// / `pytorch_model-00001-of-00003.bin` (`index` + 1, both zero-padded to 5
// digits). Throws an `Error` with `ExitStatus::k_usage` when `count` is over
// `k_max_shard_count` (the message suggests a larger shard size), and
// `std::out_of_range` when `index` is not below `count`.
std::string shard_file_name(ShardFormat format, size_t index, size_t count);

// The index file's name: `model.safetensors.index.json` /
// `pytorch_model.bin.index.json`. Only a checkpoint of two or more shards has
// one.
std::string index_file_name(ShardFormat format);

// The index file's text, byte for byte as transformers' `save_pretrained`
// writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"` of
// `{"metadata": {"total_size": total_size, **extra_metadata}, "weight_map":
// weight_map}`, with Python's escaping (`ensure_ascii`: non-ASCII as `\uXXXX`,
// a surrogate pair above U+FFFF). `weight_map` pairs a tensor name with its
// shard's file name, in any order (the text sorts them); `extra_metadata`
// values are written as strings. Throws a `FormatError` when a name appears
// twice in `weight_map`, a key of `extra_metadata` is `total_size`, or a
// string is not UTF-8.
std::string hf_index_json(uint64_t total_size,
                          const std::vector<std::pair<std::string, std::string>>& weight_map,
                          const std::map<std::string, std::string>& extra_metadata);

// The names (not paths), sorted, of the entries of `folder` that a sharded
// write of `format` would replace or leave stale: the shard names
// `model-NNNNN-of-NNNNN.safetensors` / `pytorch_model-NNNNN-of-NNNNN.bin` (N a
// digit 0-9), the single-file name and the index name; folders are left out.
// Nothing when `folder` does not exist. Throws an `Error` naming `folder` when
// it cannot be listed.
std::vector<std::string> stale_shard_files(const std::string& folder, ShardFormat format);

}  // namespace ckpt
