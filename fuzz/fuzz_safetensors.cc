// Fuzz target: the safetensors header codec and reader over arbitrary bytes
// taken as a whole file. `looks_like_safetensors`, `safetensors_prefix_size`
// and `parse_safetensors_header` must give an answer or a FormatError, and
// agree: a header that parses starts like safetensors, ends where the prefix
// says, and has tensors that tile the data buffer exactly. What parses must
// also survive the writer: `serialize_safetensors_header` of its tensors and
// metadata, with their bytes laid out in its order, must parse back to the
// same tensors (the tool never writes what it would refuse). Then the file
// through the format table, `read_checkpoint_bytes`: a checkpoint whose
// storages lie inside the input, or an Error; and safetensors only claims
// what its header parser accepts.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "common.h"
#include "ckpt/checkpoint.h"
#include "ckpt/safetensors_codec.h"

using namespace ckpt;

namespace {

// The bytes between `begin` and `end` of the data buffer of `header` in `data`.
ByteSpan tensor_bytes(const uint8_t* data, const SafetensorsHeader& header,
                      const SafetensorsEntry& entry) {
  return {data + header.data_start + entry.begin, entry.end - entry.begin};
}

// Writes `header`'s tensors and metadata again as the writer lays them out and
// parses the result: the same names, dtypes, shapes, byte sizes and metadata.
void check_rewrite(const uint8_t* data, const SafetensorsHeader& header) {
  SafetensorsLayout layout;
  try {
    layout = serialize_safetensors_header(header.tensors, header.metadata);
  } catch (const FormatError& e) {
    std::fprintf(stderr, "the writer refuses a header the reader accepts: %s\n", e.what());
    std::abort();
  }
  std::string file = layout.header;
  for (size_t index : layout.order) {
    ByteSpan bytes = tensor_bytes(data, header, header.tensors[index]);
    file.append(reinterpret_cast<const char*>(bytes.data), bytes.size);
  }
  SafetensorsHeader again;
  try {
    again = parse_safetensors_header(fuzz::span_of(file), file.size());
  } catch (const FormatError& e) {
    std::fprintf(stderr, "the reader refuses what the writer wrote: %s\n", e.what());
    std::abort();
  }
  CKPT_FUZZ_CHECK(again.metadata == header.metadata);
  CKPT_FUZZ_CHECK(again.tensors.size() == header.tensors.size());
  CKPT_FUZZ_CHECK(again.data_size == header.data_size);
  for (size_t i = 0; i < again.tensors.size(); ++i) {
    const SafetensorsEntry& got = again.tensors[i];
    const SafetensorsEntry& want = header.tensors[layout.order[i]];
    CKPT_FUZZ_CHECK(got.name == want.name && got.dtype_name == want.dtype_name &&
                    got.shape == want.shape && got.end - got.begin == want.end - want.begin);
    ByteSpan was = tensor_bytes(data, header, want);
    ByteSpan is = tensor_bytes(reinterpret_cast<const uint8_t*>(file.data()), again, got);
    CKPT_FUZZ_CHECK(was.size == 0 || std::memcmp(was.data, is.data, was.size) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan file = fuzz::span_of(data, size);
  bool looks = looks_like_safetensors(file, size);
  // Sniffing from the first bytes only, as a reader of a file that is not
  // mapped would.
  looks_like_safetensors({data, std::min<size_t>(size, 16)}, size);

  std::optional<uint64_t> prefix;
  try {
    prefix = safetensors_prefix_size(file, size);
    CKPT_FUZZ_CHECK(*prefix >= 8 && *prefix <= size);
  } catch (const FormatError&) {
  }

  std::optional<SafetensorsHeader> header;
  try {
    header = parse_safetensors_header(file, size);
  } catch (const FormatError&) {
  }
  if (header) {
    CKPT_FUZZ_CHECK(looks);
    CKPT_FUZZ_CHECK(prefix && header->data_start == *prefix);
    CKPT_FUZZ_CHECK(header->data_start + header->data_size == size);
    uint64_t covered = 0;
    for (const SafetensorsEntry& entry : header->tensors) {
      CKPT_FUZZ_CHECK(entry.begin <= entry.end && entry.end <= header->data_size);
      CKPT_FUZZ_CHECK(entry.name != "__metadata__");
      CKPT_FUZZ_CHECK(safetensors_dtype_bits(entry.dtype_name) > 0);
      covered += entry.end - entry.begin;
      crc32_of(tensor_bytes(data, *header, entry));  // touch every byte
    }
    CKPT_FUZZ_CHECK(covered == header->data_size);
    check_rewrite(data, *header);
  }

  Checkpoint ckpt;
  try {
    ckpt = read_checkpoint_bytes("fuzz.safetensors", file);
  } catch (const Error&) {
    return 0;
  }
  fuzz::check_checkpoint(ckpt, data, size);
  CKPT_FUZZ_CHECK(std::strcmp(format_name(ckpt), "safetensors") != 0 || header);
  return 0;
}
