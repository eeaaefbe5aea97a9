// Storages whose bytes are runs of several files: how readers of sharded
// checkpoints (DeepSpeed ZeRO, torch DCP) build them, and how every consumer
// of a storage's bytes reads them, one range or many, through a bounded
// buffer. Nothing here holds a whole tensor in memory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/graph.h"
#include "ckpt/mapped_file.h"

namespace ckpt {

class MappedFile;

// Appends `size` bytes at `file_offset` of `file` to `storage.pieces`,
// merged into the last piece when they follow it in the same file. A size
// of 0 adds nothing.
void append_piece(Storage& storage, const MappedFile& file, uint64_t file_offset, uint64_t size);

// Ends building `storage` from its pieces: they must add up to numel ×
// element size (throws `FormatError` naming `storage.key` otherwise). One
// piece becomes a plain range (`bytes`, `file`, `file_offset`), so that it is
// copied inside the kernel like any other; several keep `pieces`, with
// `bytes` {nullptr, total}.
void finish_pieces(Storage& storage);

// The CRC-32 of bytes [offset, offset + size) of the open file `fd`, as
// read: what a reader of pieces saw, so that the records they come from can
// be proven without reading those bytes again (check_piece_sources).
struct ReadPart {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};
using ReadLog = std::vector<ReadPart>;

// Copies bytes [`offset`, `offset` + `size`) of `storage` (one range or
// pieces) into `to`: pread from the files, memcpy for bytes only in memory.
// With `log`, appends a ReadPart for each run read from a file (or from its
// mapped pages). Throws `Error` naming the file when one cannot be read or
// was truncated.
void read_storage_range(const Storage& storage, uint64_t offset, uint8_t* to, uint64_t size,
                        ReadLog* log = nullptr);

// Copies bytes [`offset`, `offset` + `size`) of `storage` to the file `fd` at
// its position by `copy_at` (with `threads`), piece by piece. Returns how
// many were copied: fewer when the kernel cannot copy between these files
// (the caller writes the rest through a buffer).
uint64_t copy_storage_range(const Storage& storage, uint64_t offset, uint64_t size, int fd,
                            CopyThreads threads = CopyThreads::one);

// A record that storages take pieces of (a ZeRO rank's fp32 partition, a
// frozen fragment), with the CRC-32 its file carries for the whole of it. A
// piece has no CRC-32 of its own, and the output's is computed from the
// bytes read: only the whole record proves that they are what was saved.
struct PieceSource {
  const MappedFile* file = nullptr;
  std::string record;  // how messages name it: `<file>:<archive>/data/<key>`
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

// True when `source`'s bytes match its CRC-32: the CRC-32s of `read` (parts
// of its file already read, sorted by fd and offset) joined with those of
// the bytes between them, read now (in two halves at once from 1 MiB).
// Throws `Error` naming the file when it cannot be read.
bool piece_source_intact(const PieceSource& source, const ReadLog& read = {});

// Checks every one of `sources` (piece_source_intact, given `read` in any
// order); throws `Error` naming the file and record of the first whose bytes
// do not match.
void check_piece_sources(const std::vector<PieceSource>& sources, ReadLog read = {});

// The parts of `read` that lie wholly inside one of `sources`, sorted by fd
// and offset: reads that check_piece_sources proves against the CRC-32s of
// those records.
ReadLog reads_inside(ReadLog read, const std::vector<PieceSource>& sources);

// The CRC-32 of `storage`'s bytes joined from the CRC-32s of parts of `read`
// (sorted by fd and offset) that cover its file range or pieces exactly, in
// order; nullopt when some byte of it was not read, or is only in memory.
std::optional<uint32_t> crc32_from_reads(const Storage& storage, const ReadLog& read);

// True when `storage`'s bytes must be read through `read_storage_range`
// (it has pieces), false when `storage_bytes` holds them.
inline bool has_pieces(const Storage& storage) { return !storage.pieces.empty(); }

}  // namespace ckpt
