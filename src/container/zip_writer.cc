// This file writes zip archives exactly as LibTorch 1.13's PyTorchStreamWriter
// does (miniz 2.x, zip64 mode, records 64-byte aligned by an "FB" extra
// field), so that torch.load meets nothing it has not seen from torch.save.
// tests/unit_torch/zip_writer_identity_test.cc checks the bytes against the
// real PyTorchStreamWriter.
//
// Unlike PyTorchStreamWriter it streams: a record is written as local header,
// data, data descriptor (miniz writes the CRC-32 and sizes after the data
// anyway), so tensor bytes go from the input file to the output with
// copy_file_range when their CRC-32 is already known (a zip input's records),
// and through 1 MiB buffers otherwise: from 1 MiB on, two threads each read,
// sum and write one half of the record at once (pwrite), since one core
// moves only about 4 GB/s of page cache. Memory stays flat whatever the size.
//
// The layout, for a record of n bytes at offset o (T = 0xFFFFFFFF):
//   local header: PK\3\4, version 0, flags 0x0808 (0x0800 if n = 0), stored,
//     time/date 0, CRC and sizes 0, name length, extra length; the name; a
//     zip64 extra [n, 0 if n >= T][o if o >= T] when n >= T or o >= T; an
//     "FB" field of 'Z' bytes padding the data to a multiple of 64;
//   data; a descriptor PK\7\8, CRC, sizes (8 bytes each with a zip64 extra,
//     else 4), only when n > 0.
// Central entries repeat that with made-by/version 0, sizes and offset
// capped at T, and a zip64 extra [n, n if n >= T][o if o >= T]; then the zip64
// end record, its locator and the classic end record, always.
#include "ckpt/zip_writer.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "ckpt/cast.h"
#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/verify.h"
#include "ckpt/writer.h"
#include "util/two_halves.h"

namespace ckpt {
namespace {

constexpr uint64_t k_max32 = 0xffffffff;
constexpr uint64_t k_alignment = 64;
constexpr uint16_t k_flags_utf8 = 0x0800;
constexpr uint16_t k_flags_descriptor = 0x0008;
// Tensor records up to this size are copied from the mapped input into the
// write buffer: a syscall each (pread, or copy_file_range between two
// writes) would cost 50,000 of them for 50,000 small tensors.
constexpr uint64_t k_small_record = 64 * 1024;

void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out += static_cast<char>((value >> (8 * i)) & 0xff);
  }
}

uint16_t flags_for(uint64_t size) {
  return size > 0 ? k_flags_utf8 | k_flags_descriptor : k_flags_utf8;
}

}  // namespace

ZipWriter::ZipWriter(int fd, std::string path, std::string archive, RereadBehind* reread)
    : m_fd(fd), m_reread(reread), m_path(std::move(path)), m_prefix(std::move(archive) + "/") {
  if (m_reread != nullptr) {
    off_t start = ::lseek(m_fd, 0, SEEK_CUR);
    if (start < 0) {
      m_reread = nullptr;  // not a file: nothing to reread behind
    } else {
      m_start = static_cast<uint64_t>(start);
    }
  }
}

void ZipWriter::fail(const std::string& what, int error) {
  std::string cause = error != 0 ? std::strerror(error) : "";
  throw Error(m_path + ": cannot write: " + what + (!what.empty() && !cause.empty() ? ": " : "") + cause);
}

void ZipWriter::write(const void* data, size_t size) {
  if (m_buffer.size() + size > k_buffer_size) {
    flush();
  }
  if (size >= k_buffer_size) {
    write_through(data, size);
  } else {
    m_buffer.append(static_cast<const char*>(data), size);
  }
  m_offset += size;
}

void ZipWriter::flush() {
  write_through(m_buffer.data(), m_buffer.size());
  m_buffer.clear();
}

void ZipWriter::write_through(const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(m_fd, bytes, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      fail("", n < 0 ? errno : ENOSPC);
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void ZipWriter::write_at(uint64_t position, const uint8_t* data, uint64_t size) {
  while (size > 0) {
    ssize_t n = ::pwrite(m_fd, data, size, static_cast<off_t>(position));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      fail("", n < 0 ? errno : ENOSPC);
    }
    data += n;
    position += static_cast<uint64_t>(n);
    size -= static_cast<uint64_t>(n);
  }
}

// Reads exactly `size` bytes at `offset` of `source_fd` into `to`.
void ZipWriter::read_input(int source_fd, char* to, uint64_t size, uint64_t offset) {
  uint64_t done = read_at(source_fd, to, size, offset);
  if (done < size) {
    fail("cannot read the input at byte " + std::to_string(offset + done), errno);
  }
}

void ZipWriter::begin_record(const std::string& name, uint64_t size) {
  std::string full = m_prefix + name;
  uint64_t offset = m_offset;
  std::string zip64;
  if (size >= k_max32 || offset >= k_max32) {
    std::string body;
    if (size >= k_max32) {
      put(body, size, 8);
      put(body, 0, 8);  // miniz has no compressed size yet when it writes this
    }
    if (offset >= k_max32) {
      put(body, offset, 8);
    }
    put(zip64, 0x0001, 2);
    put(zip64, body.size(), 2);
    zip64 += body;
  }
  uint64_t data_start = offset + 30 + full.size() + zip64.size() + 4;
  uint64_t padding = (k_alignment - data_start % k_alignment) % k_alignment;

  std::string header;
  put(header, 0x04034b50, 4);
  put(header, 0, 2);                // version needed
  put(header, flags_for(size), 2);
  put(header, 0, 2);                // stored
  put(header, 0, 4);                // time, date
  put(header, 0, 4);                // CRC-32: in the descriptor
  put(header, 0, 4);                // sizes: in the descriptor
  put(header, 0, 4);
  put(header, full.size(), 2);
  put(header, zip64.size() + 4 + padding, 2);
  header += full;
  header += zip64;
  header += "FB";
  put(header, padding, 2);
  header.append(padding, 'Z');
  write(header.data(), header.size());
  m_entries.push_back({std::move(full), offset, size, 0, m_offset});
}

void ZipWriter::announce_data() {
  const Entry& entry = m_entries.back();
  if (m_reread != nullptr) {
    m_reread->written(m_fd, m_start + entry.data, entry.size, m_path);
  }
}

void ZipWriter::end_record(uint32_t crc32) {
  Entry& entry = m_entries.back();
  entry.crc32 = crc32;
  if (entry.size == 0) {
    return;
  }
  bool zip64 = entry.size >= k_max32 || entry.offset >= k_max32;
  std::string descriptor;
  put(descriptor, 0x08074b50, 4);
  put(descriptor, crc32, 4);
  put(descriptor, entry.size, zip64 ? 8 : 4);
  put(descriptor, entry.size, zip64 ? 8 : 4);
  write(descriptor.data(), descriptor.size());
}

void ZipWriter::add(const std::string& name, ByteSpan data, std::optional<uint32_t> crc32) {
  begin_record(name, data.size);
  write(data.data, data.size);
  end_record(crc32 ? *crc32 : crc32_update(0, data.data, data.size));
}

void ZipWriter::add_from_file(const std::string& name, int source_fd, uint64_t offset,
                              uint64_t size, std::optional<uint32_t> crc32) {
  if (!crc32) {
    add_filled(name, size, 1,
               [&](uint64_t at, uint8_t* to, uint64_t n,
                   std::vector<uint8_t>&) -> std::optional<uint32_t> {
                 read_input(source_fd, reinterpret_cast<char*>(to), n, offset + at);
                 return std::nullopt;
               });
    return;
  }
  begin_record(name, size);
  flush();
  // What the kernel cannot copy (another file system, a short source) is
  // streamed below.
  uint64_t copied = copy_at(source_fd, offset, m_fd, size, copy_threads_beside(m_reread));
  m_offset += copied;
  if (copied == size) {
    announce_data();
  }
  std::vector<char> buffer(std::min<uint64_t>(size - copied, k_buffer_size));
  for (uint64_t at = copied; at < size;) {
    uint64_t n = std::min<uint64_t>(size - at, buffer.size());
    read_input(source_fd, buffer.data(), n, offset + at);
    write(buffer.data(), n);
    at += n;
  }
  end_record(*crc32);
}

void ZipWriter::add_filled(const std::string& name, uint64_t size, uint64_t grain,
                           const FillFn& fill) {
  begin_record(name, size);
  flush();
  // Halves are written in place (pwrite), which needs a file; anything else
  // (a pipe) is written in one go, in order.
  off_t start = ::lseek(m_fd, 0, SEEK_CUR);
  const uint64_t chunk = std::max<uint64_t>(grain, k_buffer_size / grain * grain);
  uint32_t sums[2] = {0, 0};
  auto make = [&](uint64_t begin, uint64_t end) {
    std::vector<uint8_t> buffer(std::min(end - begin, chunk));
    std::vector<uint8_t> scratch;
    uint32_t crc = 0;
    for (uint64_t at = begin; at < end;) {
      uint64_t n = std::min(chunk, end - at);
      std::optional<uint32_t> made = fill(at, buffer.data(), n, scratch);
      crc = made ? crc32_combine(crc, *made, n) : crc32_update(crc, buffer.data(), n);
      if (start < 0) {
        write_through(buffer.data(), n);
      } else {
        write_at(static_cast<uint64_t>(start) + at, buffer.data(), n);
      }
      at += n;
    }
    sums[begin == 0 ? 0 : 1] = crc;
  };
  uint64_t half = size;
  if (start < 0) {
    make(0, size);
  } else {
    half = in_two_halves(size, make, grain);
  }
  uint32_t crc = crc32_combine(sums[0], sums[1], size - half);
  m_offset += size;
  if (start >= 0 && ::lseek(m_fd, start + static_cast<off_t>(size), SEEK_SET) < 0) {
    fail("", errno);
  }
  if (start >= 0) {
    announce_data();
  }
  end_record(crc);
}

uint64_t ZipWriter::finish() {
  add("version", {reinterpret_cast<const uint8_t*>("3\n"), 2});
  uint64_t directory = m_offset;
  std::string out;
  for (const Entry& entry : m_entries) {
    std::string zip64;
    if (entry.size >= k_max32) {
      put(zip64, entry.size, 8);
      put(zip64, entry.size, 8);
    }
    if (entry.offset >= k_max32) {
      put(zip64, entry.offset, 8);
    }
    if (!zip64.empty()) {
      std::string field;
      put(field, 0x0001, 2);
      put(field, zip64.size(), 2);
      zip64 = field + zip64;
    }
    put(out, 0x02014b50, 4);
    put(out, 0, 2);  // version made by
    put(out, 0, 2);  // version needed
    put(out, flags_for(entry.size), 2);
    put(out, 0, 2);  // stored
    put(out, 0, 4);  // time, date
    put(out, entry.crc32, 4);
    put(out, std::min(entry.size, k_max32), 4);
    put(out, std::min(entry.size, k_max32), 4);
    put(out, entry.name.size(), 2);
    put(out, zip64.size(), 2);
    put(out, 0, 2);  // comment
    put(out, 0, 2);  // disk
    put(out, 0, 2);  // internal attributes
    put(out, 0, 4);  // external attributes
    put(out, std::min(entry.offset, k_max32), 4);
    out += entry.name;
    out += zip64;
  }
  uint64_t directory_size = out.size();
  uint64_t count = m_entries.size();
  put(out, 0x06064b50, 4);  // zip64 end of central directory
  put(out, 44, 8);
  put(out, 0x031e, 2);
  put(out, 0x002d, 2);
  put(out, 0, 4);
  put(out, 0, 4);
  put(out, count, 8);
  put(out, count, 8);
  put(out, directory_size, 8);
  put(out, directory, 8);
  put(out, 0x07064b50, 4);  // zip64 locator
  put(out, 0, 4);
  put(out, directory + directory_size, 8);
  put(out, 1, 4);
  put(out, 0x06054b50, 4);  // end of central directory
  put(out, 0, 2);
  put(out, 0, 2);
  put(out, std::min<uint64_t>(count, 0xffff), 2);
  put(out, std::min<uint64_t>(count, 0xffff), 2);
  put(out, std::min(directory_size, k_max32), 4);
  put(out, std::min(directory, k_max32), 4);
  put(out, 0, 2);
  write(out.data(), out.size());
  flush();
  return m_offset;
}

namespace {

// Writes `storage`'s bytes (in dtype `from`) cast to its dtype, a buffer at a
// time: read from its file or pieces (pread: about twice as fast as touching
// the mapped pages, as TensorBytes finds), or from the map when in memory.
// With `check`, each buffer is checked as it is cast and the source's CRC-32
// noted (CastCheck); with `reads`, what it reads of a source without a
// CRC-32 of its own (a ZeRO run's) is noted there.
void add_cast(ZipWriter& zip, const std::string& path, const std::string& name,
              const Storage& storage, Dtype from, ReadLog* reads, CastCheck* check) {
  ByteSpan source = storage_bytes(storage).bytes;
  uint64_t in_size = static_cast<uint64_t>(element_size(from));
  uint64_t out_size = static_cast<uint64_t>(element_size(storage.dtype));
  bool read = has_pieces(storage) || storage.file != nullptr;
  std::mutex noting;
  ReadLog source_sums;  // the source's CRC-32 by buffer, `offset` in the storage
  zip.add_filled(
      name, static_cast<uint64_t>(storage.numel) * out_size, out_size,
      [&](uint64_t at, uint8_t* to, uint64_t n,
          std::vector<uint8_t>& read_buffer) -> std::optional<uint32_t> {
        uint64_t first = at / out_size;
        uint64_t count = n / out_size;
        const uint8_t* elements = source.data + first * in_size;
        ReadLog read_now;
        bool logged = reads != nullptr && !storage.has_crc32;
        if (read) {
          read_buffer.resize(count * in_size);
          read_storage_range(storage, first * in_size, read_buffer.data(), count * in_size,
                             logged ? &read_now : nullptr);
          elements = read_buffer.data();
        }
        cast_elements(from, storage.dtype, elements, to, count);
        if (check == nullptr) {
          return std::nullopt;
        }
        size_t differs = check->differs(from, storage.dtype, elements, to, count);
        if (differs < count) {
          verification_failed(path, name + " is not its source cast to " +
                                        std::string(dtype_name(storage.dtype)) + " at element " +
                                        std::to_string(first + differs));
        }
        ReadPart sum{-1, first * in_size, count * in_size,
                     crc32_update(0, elements, count * in_size)};
        std::lock_guard<std::mutex> lock(noting);
        source_sums.push_back(sum);
        if (logged) {
          reads->insert(reads->end(), read_now.begin(), read_now.end());
        }
        return std::nullopt;
      });
  if (check != nullptr) {
    std::sort(source_sums.begin(), source_sums.end(),
              [](const ReadPart& a, const ReadPart& b) { return a.offset < b.offset; });
    uint32_t crc = 0;
    for (const ReadPart& sum : source_sums) {
      crc = crc32_combine(crc, sum.crc32, sum.size);
    }
    check->source_crc32s[&storage] = crc;
  }
}

// Writes the bytes of `storage` (pieces of several files, or a range of one
// that has no CRC-32 of its own), read a buffer at a time; with `reads`,
// noting the CRC-32 of every run read (two threads append, one at a time);
// the buffer's CRC-32 is then joined from those, not summed again.
void add_read(ZipWriter& zip, const std::string& name, const Storage& storage, ReadLog* reads) {
  std::mutex appending;
  zip.add_filled(name, storage.bytes.size, 1,
                 [&](uint64_t at, uint8_t* to, uint64_t n,
                     std::vector<uint8_t>&) -> std::optional<uint32_t> {
                   if (reads == nullptr) {
                     read_storage_range(storage, at, to, n);
                     return std::nullopt;
                   }
                   ReadLog read;
                   read_storage_range(storage, at, to, n, &read);
                   uint32_t crc = 0;
                   uint64_t logged = 0;
                   for (const ReadPart& part : read) {
                     crc = crc32_combine(crc, part.crc32, part.size);
                     logged += part.size;
                   }
                   std::lock_guard<std::mutex> lock(appending);
                   reads->insert(reads->end(), read.begin(), read.end());
                   return logged == n ? std::optional<uint32_t>(crc) : std::nullopt;
                 });
}

}  // namespace

uint64_t write_checkpoint(const EncodedPickle& pickle, int fd,
                          const std::string& path,
                          const ProgressFn& progress, const StorageCasts& casts,
                          ReadLog* reads, CastCheck* check, RereadBehind* reread) {
  uint64_t total = pickle.bytes.size();
  for (const Storage* storage : pickle.storages) {
    total += static_cast<uint64_t>(storage->numel) * element_size(storage->dtype);
  }
  ZipWriter zip(fd, path, "archive", reread);
  zip.add("data.pkl", {reinterpret_cast<const uint8_t*>(pickle.bytes.data()), pickle.bytes.size()});
  zip.add("byteorder", {reinterpret_cast<const uint8_t*>("little"), 6});
  for (size_t i = 0; i < pickle.storages.size(); ++i) {
    const Storage* storage = pickle.storages[i];
    std::string name = "data/" + std::to_string(i);
    std::optional<uint32_t> crc32;
    if (storage->has_crc32) {
      crc32 = storage->crc32;
    }
    StorageBytes where = storage_bytes(*storage);
    auto cast = casts.find(storage);
    if (cast != casts.end()) {
      add_cast(zip, path, name, *storage, cast->second, reads, check);
    } else if (has_pieces(*storage) ||
               (reads != nullptr && !crc32 && where.file != nullptr &&
                where.bytes.size > k_small_record)) {
      add_read(zip, name, *storage, reads);
    } else if (where.file != nullptr && where.bytes.size > k_small_record) {
      zip.add_from_file(name, where.file->fd(), where.file_offset, where.bytes.size, crc32);
    } else {
      zip.add(name, where.bytes, crc32);
    }
    if (progress) {
      progress("write", zip.written(), total);
    }
  }
  return zip.finish();
}

}  // namespace ckpt
