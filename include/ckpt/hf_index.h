// The index of a HuggingFace sharded checkpoint (`model.safetensors.index.json`,
// `pytorch_model.bin.index.json`): `{"metadata": {"total_size": N, …},
// "weight_map": {"<tensor>": "<shard file>", …}}`. Parsing it is a pure
// function over bytes, with every check that needs no file: the reader
// (src/formats/hf_index.cc) then opens the shards it names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/bytes.h"

namespace ckpt {

// The largest index read: a weight_map of a million tensors is ~100 MB of
// text only in theory; real ones are under 1 MiB.
constexpr uint64_t k_hf_index_max_bytes = 64ull << 20;

// What the shards of an index are.
enum class HfShardFormat { k_safetensors, k_bin };

// A parsed, validated index.
struct HfIndex {
  HfShardFormat format = HfShardFormat::k_safetensors;
  // `weight_map` in the index's order: tensor name, shard file name.
  std::vector<std::pair<std::string, std::string>> weight_map;
  // The shard file names, each once, in the order `weight_map` first names them.
  std::vector<std::string> shards;
  // `metadata.total_size` when it is a whole number of bytes.
  std::optional<uint64_t> total_size;
  // `metadata.total_size` is there but no whole number (old transformers
  // wrote fractions for bool tensors): not checked.
  bool total_size_unusable = false;
};

// Whether `head` (a file's first bytes) looks like an HF index: JSON
// whitespace, `{`, then a key, and `"weight_map"` somewhere in the first
// k_hf_index_max_bytes. For sniffing by content.
bool looks_like_hf_index(ByteSpan head);

// The shard format an index called `name` (a path or file name) promises:
// `*.safetensors.index*.json` safetensors, `*.bin.index*.json` bin; none for
// another name (its shards' extensions then decide).
std::optional<HfShardFormat> hf_index_format_of_name(std::string_view name);

// Parses and validates the index `bytes`; `name` is the index file, named
// first in every message. Refuses (throws `Error`: `<name>: <what>: <cause>`,
// `<name>@<byte>: …` for a JSON syntax error): over k_hf_index_max_bytes; not
// one UTF-8 JSON object; no `weight_map`, or one that is not an object of
// strings, is empty, or names a tensor twice; a shard name that is empty,
// absolute, has a drive or UNC prefix, a `..` component or a NUL byte; shards
// of two extensions, or an extension other than the index's (a `.bin` in a
// safetensors index); `metadata` that is not an object.
HfIndex parse_hf_index(ByteSpan bytes, const std::string& name);

// Whether `file` (a file name) looks like a shard named as `shard` is
// (`<stem>-<5 digits>-of-<5 digits><.ext>`): same stem and extension, any
// numbers. False when `shard` is not named that way.
bool is_hf_shard_like(std::string_view file, std::string_view shard);

// `text` (a tensor or file name) in single quotes for a message, its control
// bytes as `\xNN` (a NUL would end the message); with `escape_non_ascii`,
// every byte from 0x80 on too (a message about a name that is not UTF-8
// stays UTF-8 itself).
std::string quoted_name(std::string_view text, bool escape_non_ascii = false);

// The index to read for the folder `folder`: `model.safetensors.index.json`,
// else `pytorch_model.bin.index.json` (transformers prefers the safetensors
// one), else the one `*.safetensors.index*.json`, else the one
// `*.bin.index*.json`; with no index, the single file of a one-shard save,
// `model.safetensors` else `pytorch_model.bin`. Throws `Error` naming `folder`
// when it holds none of these, or several indexes of one kind. (The one
// function here that reads the file system.)
std::string find_hf_index(const std::string& folder);

// Whether `folder` holds a file `find_hf_index` would consider (one whose
// name `hf_index_format_of_name` knows): such a folder is one checkpoint,
// read through its index, whether or not the index then reads. False when
// `folder` cannot be listed.
bool holds_hf_index(const std::string& folder);

}  // namespace ckpt
