// The index of a zip archive, read by our own code so that tensor records can
// be used in place in the mapped file (PyTorchStreamReader in LibTorch 1.13
// can only copy a record into the heap, and hides record sizes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/bytes.h"

namespace ckpt {

struct ZipEntry {
  std::string_view name;     // full name, archive folder included (in the file's bytes)
  uint64_t data_offset = 0;  // where the record's bytes start in the file
  uint64_t size = 0;         // stored (= uncompressed) size
  uint32_t crc32 = 0;
  uint16_t method = 0;       // 0 = stored
};

// True when `file` starts like a zip archive.
bool looks_like_zip(ByteSpan file);

// Reads the central directory (zip64 included) and checks every entry against
// its local header and the file's bounds; the entries' names view `file`.
// Throws `FormatError` naming the defect: truncation, duplicate names, header
// mismatch, encryption, an entry that overlaps the directory.
std::vector<ZipEntry> read_zip_index(ByteSpan file);

// CRC-32 (zip's polynomial) of `bytes`.
uint32_t crc32_of(ByteSpan bytes);

}  // namespace ckpt
