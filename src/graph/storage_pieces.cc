#include "ckpt/storage_pieces.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "util/two_halves.h"

namespace ckpt {
namespace {

void read_file_at(const MappedFile& file, uint64_t offset, uint8_t* to, uint64_t size) {
  if (read_at(file.fd(), to, size, offset) != size) {
    if (errno == 0) {
      throw truncated_while_read(file.path());
    }
    throw Error(file.path() + ": cannot read: " + std::strerror(errno));
  }
}

}  // namespace

void append_piece(Storage& storage, const MappedFile& file, uint64_t file_offset, uint64_t size) {
  if (size == 0) {
    return;
  }
  if (!storage.pieces.empty()) {
    BytePiece& last = storage.pieces.back();
    if (last.file == &file && last.file_offset + last.size == file_offset) {
      last.size += size;
      return;
    }
  }
  storage.pieces.push_back({&file, file_offset, size});
}

void finish_pieces(Storage& storage) {
  uint64_t total = 0;
  for (const BytePiece& piece : storage.pieces) {
    total += piece.size;
  }
  uint64_t needed = static_cast<uint64_t>(storage.numel) *
                    static_cast<uint64_t>(element_size(storage.dtype));
  if (total != needed) {
    throw FormatError("'" + storage.key + "': its pieces hold " + std::to_string(total) +
                      " bytes, but its " + std::to_string(storage.numel) + " elements need " +
                      std::to_string(needed));
  }
  storage.has_crc32 = false;
  if (storage.pieces.size() == 1) {
    const BytePiece& piece = storage.pieces.front();
    storage.file = piece.file;
    storage.file_offset = piece.file_offset;
    storage.bytes = {piece.file->bytes().data + piece.file_offset, piece.size};
    storage.pieces.clear();
    return;
  }
  storage.file = nullptr;
  storage.file_offset = 0;
  storage.bytes = {nullptr, total};
}

namespace {

// Calls `run(piece, within, n)` for the parts of `storage`'s pieces that
// hold bytes [`offset`, `offset` + `size`), in order, while it returns true.
// Returns the bytes visited.
template <typename Run>
uint64_t for_pieces_in(const Storage& storage, uint64_t offset, uint64_t size, const Run& run) {
  uint64_t start = 0;
  uint64_t done = 0;
  // A linear walk: a binary search would pay off only for storages of
  // thousands of pieces (2-D boxes, one per row), read a buffer at a time.
  for (const BytePiece& piece : storage.pieces) {
    if (done == size) {
      break;
    }
    uint64_t end = start + piece.size;
    if (offset + done < end) {
      uint64_t within = offset + done - start;
      uint64_t n = std::min(size - done, piece.size - within);
      if (!run(piece, within, n)) {
        break;
      }
      done += n;
    }
    start = end;
  }
  return done;
}

}  // namespace

uint64_t copy_storage_range(const Storage& storage, uint64_t offset, uint64_t size, int fd,
                            CopyThreads threads) {
  if (storage.pieces.empty()) {
    return storage.file == nullptr ? 0
                                   : copy_at(storage.file->fd(), storage.file_offset + offset, fd,
                                             size, threads);
  }
  uint64_t copied = 0;
  for_pieces_in(storage, offset, size, [&](const BytePiece& piece, uint64_t within, uint64_t n) {
    uint64_t got = copy_at(piece.file->fd(), piece.file_offset + within, fd, n, threads);
    copied += got;
    return got == n;
  });
  return copied;
}

void read_storage_range(const Storage& storage, uint64_t offset, uint8_t* to, uint64_t size,
                        ReadLog* log) {
  if (storage.pieces.empty()) {
    if (storage.file != nullptr && size >= (64 << 10)) {
      read_file_at(*storage.file, storage.file_offset + offset, to, size);
      if (log != nullptr) {
        log->push_back({storage.file->fd(), storage.file_offset + offset, size,
                        crc32_update(0, to, size)});
      }
    } else if (size > 0) {
      std::memcpy(to, storage.bytes.data + offset, size);
      if (log != nullptr && storage.file != nullptr) {
        log->push_back({storage.file->fd(), storage.file_offset + offset, size,
                        crc32_update(0, to, size)});
      }
    }
    return;
  }
  uint64_t done = for_pieces_in(storage, offset, size,
                                [&](const BytePiece& piece, uint64_t within, uint64_t n) {
                                  read_file_at(*piece.file, piece.file_offset + within, to, n);
                                  if (log != nullptr) {
                                    log->push_back({piece.file->fd(), piece.file_offset + within,
                                                    n, crc32_update(0, to, n)});
                                  }
                                  to += n;
                                  return true;
                                });
  size -= done;
  if (size != 0) {
    throw Error("'" + storage.key + "': read past the end of its bytes");
  }
}

namespace {

// The CRC-32 of bytes [`offset`, `offset` + `size`) of `file`, read in two
// halves at once from 1 MiB.
uint32_t crc32_of_file(const MappedFile& file, uint64_t offset, uint64_t size) {
  uint32_t sums[2] = {0, 0};
  uint64_t half = in_two_halves(size, [&](uint64_t begin, uint64_t end) {
    std::vector<uint8_t> buffer(std::min<uint64_t>(end - begin, 1 << 20));
    uint32_t crc = 0;
    for (uint64_t at = begin; at < end;) {
      uint64_t n = std::min<uint64_t>(buffer.size(), end - at);
      read_file_at(file, offset + at, buffer.data(), n);
      crc = crc32_update(crc, buffer.data(), n);
      at += n;
    }
    sums[begin == 0 ? 0 : 1] = crc;
  });
  return crc32_combine(sums[0], sums[1], size - half);
}

bool before(const ReadPart& a, const ReadPart& b) {
  return a.fd != b.fd ? a.fd < b.fd : a.offset < b.offset;
}

}  // namespace

bool piece_source_intact(const PieceSource& source, const ReadLog& read) {
  const uint64_t end = source.offset + source.size;
  const int fd = source.file->fd();
  auto part = std::lower_bound(read.begin(), read.end(), ReadPart{fd, source.offset, 0, 0}, before);
  uint32_t crc = 0;
  uint64_t covered = source.offset;
  // Parts wholly inside the record, taken in order; one that overlaps what
  // is covered already (a piece read twice) is passed over.
  for (; part != read.end() && part->fd == fd && part->offset < end; ++part) {
    if (part->offset < covered || part->offset + part->size > end) {
      continue;
    }
    if (part->offset > covered) {
      crc = crc32_combine(crc, crc32_of_file(*source.file, covered, part->offset - covered),
                          part->offset - covered);
    }
    crc = crc32_combine(crc, part->crc32, part->size);
    covered = part->offset + part->size;
  }
  if (covered < end) {
    crc = crc32_combine(crc, crc32_of_file(*source.file, covered, end - covered), end - covered);
  }
  return crc == source.crc32;
}

void check_piece_sources(const std::vector<PieceSource>& sources, ReadLog read) {
  std::sort(read.begin(), read.end(), before);
  for (const PieceSource& source : sources) {
    if (!piece_source_intact(source, read)) {
      throw Error(source.record + ": CRC-32 mismatch: the tensor data is corrupt (the file was "
                  "damaged after it was saved)");
    }
  }
}

ReadLog reads_inside(ReadLog read, const std::vector<PieceSource>& sources) {
  std::vector<const PieceSource*> records;
  records.reserve(sources.size());
  for (const PieceSource& source : sources) {
    records.push_back(&source);
  }
  auto by_start = [](const PieceSource* a, const PieceSource* b) {
    int fa = a->file->fd();
    int fb = b->file->fd();
    return fa != fb ? fa < fb : a->offset < b->offset;
  };
  std::sort(records.begin(), records.end(), by_start);
  std::sort(read.begin(), read.end(), before);
  // Both sorted: a part is inside the last record that starts at or before it.
  auto inside = [&](const ReadPart& part) {
    auto next = std::upper_bound(records.begin(), records.end(), part,
                                 [](const ReadPart& p, const PieceSource* r) {
                                   int fd = r->file->fd();
                                   return p.fd != fd ? p.fd < fd : p.offset < r->offset;
                                 });
    if (next == records.begin()) {
      return false;
    }
    const PieceSource& record = **(next - 1);
    return record.file->fd() == part.fd && part.offset + part.size <= record.offset + record.size;
  };
  read.erase(std::remove_if(read.begin(), read.end(), [&](const ReadPart& p) { return !inside(p); }),
             read.end());
  return read;
}

std::optional<uint32_t> crc32_from_reads(const Storage& storage, const ReadLog& read) {
  uint32_t crc = 0;
  // Joins the parts that cover [offset, offset + size) of `fd` end to end.
  auto join = [&](int fd, uint64_t offset, uint64_t size) {
    const uint64_t end = offset + size;
    auto part = std::lower_bound(read.begin(), read.end(), ReadPart{fd, offset, 0, 0}, before);
    while (offset < end) {
      // Of the parts that start here (a range read twice), the longest that fits.
      const ReadPart* best = nullptr;
      for (; part != read.end() && part->fd == fd && part->offset == offset; ++part) {
        if (part->size > 0 && offset + part->size <= end &&
            (best == nullptr || part->size > best->size)) {
          best = &*part;
        }
      }
      if (best == nullptr) {
        return false;
      }
      crc = crc32_combine(crc, best->crc32, best->size);
      offset += best->size;
      part = std::lower_bound(part, read.end(), ReadPart{fd, offset, 0, 0}, before);
    }
    return true;
  };
  if (storage.pieces.empty()) {  // one range of one file, or only in memory
    bool read_whole = storage.file != nullptr &&
                      join(storage.file->fd(), storage.file_offset, storage.bytes.size);
    return read_whole ? std::optional<uint32_t>(crc) : std::nullopt;
  }
  for (const BytePiece& piece : storage.pieces) {
    if (!join(piece.file->fd(), piece.file_offset, piece.size)) {
      return std::nullopt;
    }
  }
  return crc;
}

}  // namespace ckpt
