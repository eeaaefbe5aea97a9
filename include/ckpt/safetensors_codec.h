// The safetensors header: parsing it with every check the reference reader
// applies, writing it byte for byte as the reference writer does, and the
// `removed: kept` choice `save_model` makes for tensors that share storage.
//
// Pure functions over bytes: no file, no tensor data. The layout, the dtype
// strings and the reference's rules are those of the safetensors crate
// (`safetensors/src/tensor.rs`, `read_metadata`, `validate`, `prepare`) and
// its Python binding (`safetensors/torch.py`, `_remove_duplicate_names`).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/dtype.h"
#include "ckpt/bytes.h"

namespace ckpt {

// The largest header length the reference reader and writer accept (10^8).
constexpr uint64_t k_safetensors_max_header = 100'000'000;

// One tensor of a safetensors header.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;       // the format's string: `F32`, `BF16`, `F8_E4M3`, `F4`
  std::optional<Dtype> dtype;   // its ckpt dtype; none for F4, F6_*, F8_E8M0
  std::vector<uint64_t> shape;  // `[]` is a scalar
  uint64_t begin = 0;           // `data_offsets`, relative to the data buffer
  uint64_t end = 0;
};

// A parsed, validated header.
struct SafetensorsHeader {
  uint64_t header_size = 0;  // N, padding included
  uint64_t data_start = 0;   // 8 + N: where the data buffer starts in the file
  uint64_t data_size = 0;    // the data buffer's length: the file size - data_start
  std::vector<SafetensorsEntry> tensors;  // in the header's order
  // `__metadata__`; none when the header has no such key (or it is `null`).
  std::optional<std::map<std::string, std::string>> metadata;
};

// The safetensors dtype string of `dtype` (`float32` → `F32`, float8_e4m3fn →
// `F8_E4M3`), or none when the format has none (complex32, complex128, quantized,
// untyped).
std::optional<std::string_view> safetensors_dtype_name(Dtype dtype);

// The ckpt dtype of the safetensors dtype string `name`, or none when it has no
// ckpt dtype or is not a safetensors dtype string (exact, case-sensitive).
std::optional<Dtype> dtype_of_safetensors_name(std::string_view name);

// Bits per element of the safetensors dtype string `name` (4 for `F4`, 6 for
// `F6_*`), or 0 when `name` is not one.
int safetensors_dtype_bits(std::string_view name);

// How many bytes from the file's start `parse_safetensors_header` needs: 8 + N.
// Throws a FormatError when `head` (at least the file's first 8 bytes, or all of
// a shorter file) does not give a header length the reference reader accepts in
// a file of `file_size` bytes: too short, a git-lfs pointer, over 10^8, or past
// the end of the file.
uint64_t safetensors_prefix_size(ByteSpan head, uint64_t file_size);

// Parses and validates the header of a safetensors file of `file_size` bytes.
// `bytes` is the file's start: at least `safetensors_prefix_size` bytes, or the
// whole file; the tensor data is never read. Applies the reference reader's
// checks in its order: length, header inside the file, UTF-8, one JSON object,
// known dtype strings, string-only metadata, then in data_offsets order every
// tensor starts where the previous one ended, its shape × dtype fits 64 bits and
// fills whole bytes and its offsets span exactly those bytes, and the last one
// ends at the end of the file. Also refuses a key that appears twice in one
// object (which the reference silently resolves to the last). Throws a
// FormatError that says where (`header@<byte>`, `tensor '<name>'` or
// `__metadata__`) and why.
SafetensorsHeader parse_safetensors_header(ByteSpan bytes, uint64_t file_size);

// Whether `head` (the file's first bytes, 9 or more for a yes) starts like a
// safetensors file of `file_size` bytes: an 8-byte little-endian length, then
// (past a UTF-8 byte-order mark, if any) JSON whitespace and `{`, or `[` when
// the length is one the reference accepts in such a file (2 to 10^8, inside
// it). For sniffing by content: a file it claims with a bad length, a mark or
// a list is then refused by the parser for that.
bool looks_like_safetensors(ByteSpan head, uint64_t file_size);

// Whether `head` (the file's first bytes) is a git-lfs pointer text, which a
// clone without `git lfs pull` holds in place of the file.
bool is_git_lfs_pointer(ByteSpan head);

// A header laid out for writing.
struct SafetensorsLayout {
  // The file's first bytes: the 8-byte length N, then the JSON header padded
  // with spaces to a multiple of 8. The tensor data follows it.
  std::string header;
  // The tensors in the order their bytes follow the header, with `begin` and
  // `end` assigned.
  std::vector<SafetensorsEntry> tensors;
  // `order[i]` is the index in the input of `tensors[i]`.
  std::vector<size_t> order;
  uint64_t data_size = 0;  // the data buffer's length
};

// Lays out the header the reference writer (`serialize`, as
// `safetensors.torch.save_file(sd, metadata=…)` calls it) writes for
// `tensors` (name, dtype_name or else dtype, shape: offsets are ignored) and
// `metadata` (none: no `__metadata__` key). Byte for byte the reference's when
// `metadata` has at most one key (the reference writes more in hash order; here
// they are sorted). Throws a FormatError when a name appears twice or is
// `__metadata__`, a dtype has no safetensors string, a shape overflows or fills
// no whole bytes, or the header would be over 10^8 bytes.
SafetensorsLayout serialize_safetensors_header(
    const std::vector<SafetensorsEntry>& tensors,
    const std::optional<std::map<std::string, std::string>>& metadata);

// One name of a group of state-dict entries that share storage (overlapping
// views, as `_find_shared_tensors` groups them).
struct SharedName {
  std::string name;
  bool complete = false;  // covers its whole storage (`_is_complete`)
};

// What `_remove_duplicate_names` decides for one group: the name written and
// the names dropped (sorted).
struct KeptName {
  std::string kept;
  std::vector<std::string> removed;
};

// The name `safetensors.torch.save_model` keeps of `group` and the names it
// drops: the smallest complete name not in `discard` (the smallest complete
// one when all are in it), overridden by the smallest complete one in
// `preferred` (names compare bytewise, as Python compares str). Throws a FormatError when no name
// is complete (the reference refuses to save such a group, even of one name).
KeptName choose_kept_name(const std::vector<SharedName>& group,
                          const std::set<std::string>& preferred = {},
                          const std::set<std::string>& discard = {});

// Adds `removed: kept` to `metadata` for each dropped name, as `save_model`
// does: a key already there is left alone ("Do not override user data").
void add_removed_names(std::map<std::string, std::string>& metadata, const KeptName& choice);

}  // namespace ckpt
