// Opening a checkpoint: the format sniffed through the table of
// source.h, the file read into a graph, and every storage bound to its bytes
// in the mapped file.
#pragma once

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/graph.h"
#include "ckpt/mapped_file.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"

namespace ckpt {

struct SourceFormat;

// Choices of the command line that readers of folders read.
struct ReadOptions {
  std::string tag;  // `--tag`: the DeepSpeed tag folder to read instead of the one `latest` names
};

struct Checkpoint {
  std::string path;
  const SourceFormat* format = nullptr;  // the reader that claimed the file (source.h)
  // The maps of the files the storages' bytes are in (each `Storage::file`
  // points at one): one when read from a path, none when read from memory.
  // A deque, so that they stay where they are when the checkpoint moves.
  std::deque<MappedFile> files;
  ByteSpan bytes;                    // the whole file
  Graph graph;
  std::string pickle_record;         // where the pickle is, for messages
  uint64_t pickle_bytes = 0;
  // How messages name where a storage's bytes are: this, then its key
  // (`in.pth:archive/data/`). Empty for a checkpoint of several files (an
  // HF index), whose storages' keys name their file and record.
  std::string storage_records;
  // What the format tells about the file, for `inspect`, by name:
  // `archive_name` (zip: the folder every record is in), `version` (zip: the
  // `version` record, trimmed), `torch_hint` (which torch wrote it, as far as
  // the file tells).
  std::vector<std::pair<std::string, std::string>> facts;
  std::vector<TensorRef> tensors;    // every tensor in the graph, in pickle order
  // The records of other files that storages take pieces of (a ZeRO run's
  // partitions), each to be checked whole against its CRC-32
  // (`check_piece_sources`): a piece carries none of its own.
  std::vector<PieceSource> piece_sources;
  // Files that storages take pieces of and that carry no checksum at all (a
  // DCP run's `.distcp` files): nothing can prove their bytes but reading
  // them, so verification takes what the writer read of them as read (the
  // output must have its CRC-32) rather than reading them again the same way.
  std::vector<const MappedFile*> unchecked_sources;
  // What the reader found odd but read (an HF index's unlisted shards or
  // tensors): `convert` reports them as its warnings, `inspect` and `check`
  // log them.
  std::vector<std::string> warnings;
  ReadOptions options;               // what `read_checkpoint` was given

  // The map of the file being read (the last one mapped: the file
  // `read_checkpoint` was given, or the shard an HF index is reading);
  // nullptr when read from memory. A reader binds each `Storage::file` to it.
  const MappedFile* mapped() const { return files.empty() ? nullptr : &files.back(); }
  // True when a file the storages are in shrank while it was mapped.
  bool shrank() const;
  // The fact called `name`, or "" when the format has none.
  std::string fact(const std::string& name) const;
};

// Opens and decodes `path`: a file, or a folder a format of the table claims
// (`SourceFormat::claims_folder`: a DeepSpeed run or tag folder, a DCP
// checkpoint, a folder of HF shards). Nothing in it is executed. Throws `Error` naming
// the file (and record or byte offset) and the cause for anything that is not
// a readable checkpoint: empty, text, tar-format (torch < 0.4),
// TorchScript archives, truncation, missing or short storage records.
Checkpoint read_checkpoint(const std::string& path, const ReadOptions& options = {});

// The same for a file already in memory (`bytes` must outlive the result),
// sniffed through the same table; `name` stands for the file in messages.
// Used by the fuzz targets.
Checkpoint read_checkpoint_bytes(const std::string& name, ByteSpan bytes);

// The name reports print for the format of `ckpt`: `zip`, `legacy`,
// `safetensors` or `hf-index`.
const char* format_name(const Checkpoint& ckpt);

}  // namespace ckpt
