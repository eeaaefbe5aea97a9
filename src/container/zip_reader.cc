// This file implements the zip index reader: the end-of-central-directory
// record (and its zip64 form), the central directory, and a cross-check of
// every entry against its local header.
//
// Checkpoints come from the internet, and pickle scanners have been fooled by
// archives that two zip readers see differently (duplicate names, a local
// header that disagrees with the central one, flag bits one reader honours and
// another ignores). So anything ambiguous is an error here rather than a
// guess: the archive torch.save writes is simple, and only that is accepted.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/zip.h"
#include "util/string_index.h"

namespace ckpt {
namespace {

constexpr uint32_t k_local_signature = 0x04034b50;
constexpr uint32_t k_central_signature = 0x02014b50;
constexpr uint32_t k_end_signature = 0x06054b50;
constexpr uint32_t k_zip64_end_signature = 0x06064b50;
constexpr uint32_t k_zip64_locator_signature = 0x07064b50;
constexpr uint64_t k_end_size = 22;
constexpr uint64_t k_central_size = 46;
constexpr uint64_t k_local_size = 30;
constexpr uint16_t k_flag_encrypted = 0x0001;
constexpr uint16_t k_flag_strong_encryption = 0x0040;

// Little-endian reads with bounds checks against the whole file.
class Cursor {
public:
  explicit Cursor(ByteSpan file) : m_file(file) {}

  uint64_t read(uint64_t offset, int bytes, const char* what) const {
    if (offset > m_file.size || static_cast<uint64_t>(bytes) > m_file.size - offset) {
      throw FormatError("zip archive is truncated: " + std::string(what) + " at byte " +
                        std::to_string(offset) + " lies past the end of the file");
    }
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) {
      value = (value << 8) | m_file.data[offset + i];
    }
    return value;
  }
  std::string_view text(uint64_t offset, uint64_t length, const char* what) const {
    if (offset > m_file.size || length > m_file.size - offset) {
      throw FormatError("zip archive is truncated: " + std::string(what) + " at byte " +
                        std::to_string(offset) + " lies past the end of the file");
    }
    return {reinterpret_cast<const char*>(m_file.data + offset), length};
  }
  uint64_t size() const { return m_file.size; }

private:
  ByteSpan m_file;
};

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

uint64_t find_end_record(const Cursor& in) {
  if (in.size() < k_end_size) {
    throw FormatError("zip archive is truncated: shorter than its end record");
  }
  uint64_t lowest = in.size() >= k_end_size + 0xffff ? in.size() - k_end_size - 0xffff : 0;
  for (uint64_t pos = in.size() - k_end_size + 1; pos-- > lowest;) {
    if (in.read(pos, 4, "end record") == k_end_signature &&
        pos + k_end_size + in.read(pos + 20, 2, "end record") <= in.size()) {
      return pos;
    }
  }
  throw FormatError("zip archive is truncated: no end-of-central-directory record");
}

Directory read_directory(const Cursor& in) {
  uint64_t end = find_end_record(in);
  Directory dir;
  dir.entries = in.read(end + 10, 2, "end record");
  dir.size = in.read(end + 12, 4, "end record");
  dir.offset = in.read(end + 16, 4, "end record");
  bool has_locator = end >= 20 && in.read(end - 20, 4, "zip64 locator") == k_zip64_locator_signature;
  if (has_locator) {
    uint64_t record = in.read(end - 20 + 8, 8, "zip64 locator");
    if (in.read(record, 4, "zip64 end record") != k_zip64_end_signature) {
      throw FormatError("zip64 end record not found at byte " + std::to_string(record));
    }
    dir.entries = in.read(record + 32, 8, "zip64 end record");
    dir.size = in.read(record + 40, 8, "zip64 end record");
    dir.offset = in.read(record + 48, 8, "zip64 end record");
  } else if (dir.entries == 0xffff || dir.size == 0xffffffff || dir.offset == 0xffffffff) {
    throw FormatError("zip archive is truncated: zip64 end record missing");
  }
  if (dir.offset > in.size() || dir.size > in.size() - dir.offset) {
    throw FormatError("zip archive is truncated: central directory at byte " +
                      std::to_string(dir.offset) + " runs past the end of the file");
  }
  if (dir.entries > dir.size / k_central_size) {
    throw FormatError("zip central directory claims " + std::to_string(dir.entries) +
                      " entries in " + std::to_string(dir.size) + " bytes");
  }
  return dir;
}

// Applies the zip64 extended-information extra field to the 32-bit fields
// that hold 0xffffffff.
void apply_zip64_extra(const Cursor& in, uint64_t extra, uint64_t extra_len, uint64_t& size,
                       uint64_t& compressed, uint64_t& local_offset) {
  uint64_t pos = extra;
  while (pos + 4 <= extra + extra_len) {
    uint64_t id = in.read(pos, 2, "extra field");
    uint64_t len = in.read(pos + 2, 2, "extra field");
    if (pos + 4 + len > extra + extra_len) {
      throw FormatError("zip extra field runs past its entry");
    }
    if (id == 0x0001) {
      uint64_t field = pos + 4;
      uint64_t field_end = field + len;
      for (uint64_t* value : {&size, &compressed, &local_offset}) {
        if (*value == 0xffffffff) {
          if (field + 8 > field_end) {
            throw FormatError("zip64 extra field is too short");
          }
          *value = in.read(field, 8, "zip64 extra field");
          field += 8;
        }
      }
    }
    pos += 4 + len;
  }
}

}  // namespace

bool looks_like_zip(ByteSpan file) {
  return file.size >= 4 && file.data[0] == 'P' && file.data[1] == 'K' &&
         ((file.data[2] == 3 && file.data[3] == 4) || (file.data[2] == 5 && file.data[3] == 6));
}

std::vector<ZipEntry> read_zip_index(ByteSpan file) {
  Cursor in(file);
  Directory dir = read_directory(in);
  std::vector<ZipEntry> entries;
  entries.reserve(dir.entries);
  StringIndex names(dir.entries);  // to refuse a second record of one name
  uint64_t pos = dir.offset;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (in.read(pos, 4, "central directory entry") != k_central_signature) {
      throw FormatError("zip central directory entry " + std::to_string(i) + " at byte " +
                        std::to_string(pos) + " has a bad signature");
    }
    auto flags = static_cast<uint16_t>(in.read(pos + 8, 2, "central directory entry"));
    ZipEntry entry;
    entry.method = static_cast<uint16_t>(in.read(pos + 10, 2, "central directory entry"));
    entry.crc32 = static_cast<uint32_t>(in.read(pos + 16, 4, "central directory entry"));
    uint64_t compressed = in.read(pos + 20, 4, "central directory entry");
    entry.size = in.read(pos + 24, 4, "central directory entry");
    uint64_t name_len = in.read(pos + 28, 2, "central directory entry");
    uint64_t extra_len = in.read(pos + 30, 2, "central directory entry");
    uint64_t comment_len = in.read(pos + 32, 2, "central directory entry");
    uint64_t local = in.read(pos + 42, 4, "central directory entry");
    entry.name = in.text(pos + k_central_size, name_len, "entry name");
    apply_zip64_extra(in, pos + k_central_size + name_len, extra_len, entry.size, compressed,
                      local);
    pos += k_central_size + name_len + extra_len + comment_len;
    if (pos > dir.offset + dir.size) {
      throw FormatError("zip central directory entry '" + std::string(entry.name) +
                        "' runs past the directory");
    }
    if ((flags & (k_flag_encrypted | k_flag_strong_encryption)) != 0) {
      throw FormatError("zip record '" + std::string(entry.name) + "' is marked encrypted");
    }
    if (names.insert(entry.name, i)) {
      throw FormatError("zip archive has two records named '" + std::string(entry.name) + "'");
    }

    // The local header must tell the same story as the central directory.
    if (in.read(local, 4, "local header") != k_local_signature) {
      throw FormatError("zip record '" + std::string(entry.name) + "': no local header at byte " +
                        std::to_string(local));
    }
    auto local_flags = static_cast<uint16_t>(in.read(local + 6, 2, "local header"));
    auto local_method = static_cast<uint16_t>(in.read(local + 8, 2, "local header"));
    uint64_t local_name_len = in.read(local + 26, 2, "local header");
    uint64_t local_extra_len = in.read(local + 28, 2, "local header");
    std::string_view local_name = in.text(local + k_local_size, local_name_len, "local name");
    if (local_name != entry.name || local_method != entry.method ||
        (local_flags & (k_flag_encrypted | k_flag_strong_encryption)) != 0) {
      throw FormatError("zip record '" + std::string(entry.name) +
                        "': local header disagrees with the central directory (name '" +
                        std::string(local_name) + "', method " + std::to_string(local_method) + ", flags " +
                        std::to_string(local_flags) + ")");
    }
    entry.data_offset = local + k_local_size + local_name_len + local_extra_len;
    if (entry.method == 0 && compressed != entry.size) {
      throw FormatError("zip record '" + std::string(entry.name) + "' is stored but its sizes differ");
    }
    if (entry.data_offset > dir.offset || compressed > dir.offset - entry.data_offset) {
      throw FormatError("zip archive is truncated: record '" + std::string(entry.name) + "' (" +
                        std::to_string(compressed) + " bytes at byte " +
                        std::to_string(entry.data_offset) + ") runs past its data");
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

uint32_t crc32_of(ByteSpan bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const uint8_t* data = bytes.data;
  uint64_t left = bytes.size;
  while (left > 0) {
    auto chunk = static_cast<uInt>(std::min<uint64_t>(left, 1u << 30));
    crc = ::crc32(crc, data, chunk);
    data += chunk;
    left -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace ckpt
