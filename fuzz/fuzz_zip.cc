// Fuzz target: the zip index reader. Any bytes must give entries that lie
// inside the file, or a FormatError.
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "ckpt/zip.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<ZipEntry> entries;
  try {
    entries = read_zip_index(fuzz::span_of(data, size));
  } catch (const FormatError&) {
    return 0;
  }
  for (const ZipEntry& entry : entries) {
    CKPT_FUZZ_CHECK(entry.data_offset <= size);
    if (entry.method == 0) {
      CKPT_FUZZ_CHECK(entry.size <= size - entry.data_offset);
      // Read every byte of the record: the sanitizer sees any overrun.
      crc32_of({data + entry.data_offset, entry.size});
    }
  }
  return 0;
}
