#include "ckpt/storage_pieces.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ckpt/error.h"
#include "ckpt/mapped_file.h"

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

void read_storage_range(const Storage& storage, uint64_t offset, uint8_t* to, uint64_t size) {
  if (storage.pieces.empty()) {
    if (storage.file != nullptr && size >= (64 << 10)) {
      read_file_at(*storage.file, storage.file_offset + offset, to, size);
    } else if (size > 0) {
      std::memcpy(to, storage.bytes.data + offset, size);
    }
    return;
  }
  // The first piece holding `offset`: a binary search would pay off only for
  // storages of thousands of pieces (2-D boxes, one per row).
  uint64_t start = 0;
  for (const BytePiece& piece : storage.pieces) {
    if (size == 0) {
      return;
    }
    uint64_t end = start + piece.size;
    if (offset < end) {
      uint64_t within = offset - start;
      uint64_t n = std::min(size, piece.size - within);
      read_file_at(*piece.file, piece.file_offset + within, to, n);
      to += n;
      offset += n;
      size -= n;
    }
    start = end;
  }
  if (size != 0) {
    throw Error("'" + storage.key + "': read past the end of its bytes");
  }
}

}  // namespace ckpt
