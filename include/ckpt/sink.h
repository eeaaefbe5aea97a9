// The output side's seam: the table of formats `convert` writes, chosen by
// OUT's name or `--format`. To write a new format, add
// src/formats/<name>_sink.cc defining one `SinkFormat`, and one line to the
// table in src/formats/registry.cc. Every sink keeps the pipeline's rules:
// it refuses what its format cannot hold before anything is written, writes
// into the temporary file it is given, and proves what it wrote by reading
// it back through the reader table (source.h) before `convert` renames it
// into place.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/graph.h"
#include "ckpt/output_files.h"
#include "ckpt/rules.h"
#include "ckpt/tensor.h"
#include "ckpt/verify.h"

namespace ckpt {

struct Checkpoint;

// What to do with names that share bytes (a tied LM head and embedding).
enum class TiedPolicy : unsigned char {
  k_copy,    // every name written with its own copy of the bytes
  k_dedupe,  // one name per shared storage, the rest recorded as aliases
};

// The choices of the command line that sinks read.
struct SinkOptions {
  TiedPolicy tied = TiedPolicy::k_copy;
  std::vector<std::string> keep_tied;  // names `--tied dedupe` keeps
  std::optional<Dtype> dtype;          // cast floating tensors to it (`--dtype`)
  std::vector<Rule> keep_dtype;        // `--keep-dtype PATTERN`s (kind k_keep): names kept as they are
  uint64_t max_shard_size = 0;         // `--max-shard-size`: OUT is a folder of shards; 0: one file
  bool replace = false;                // `--force` (set by convert): earlier shards may be replaced
};

// The dtype the tensor `name` of `dtype` is written as: `options.dtype` for a
// floating tensor that `cast_elements` converts and no `keep_dtype` pattern
// is found in (re.search), else `dtype` itself.
Dtype written_dtype(const SinkOptions& options, const std::string& name, Dtype dtype);

// What a conversion hands its sink: the object to write (after extraction,
// rewriting and the global check) and its tensors.
struct WriteRequest {
  Node* root = nullptr;
  // Every tensor reachable from `root`, in pickle order.
  const std::vector<TensorRef>* tensors = nullptr;
  uint64_t pickle_bytes = 0;   // the input pickle's size: a size hint
  std::string shown_as;        // OUT, for messages
  std::string input;           // IN, for messages
  std::string input_records;   // `in.pth:archive/data/`: how messages name input storages
  SinkOptions options;
  ProgressFn progress;
  Graph* graph = nullptr;      // the graph of `root`, where a sink may add nodes (retyped storages)
  // When set, the writer and verification note the CRC-32s of the input
  // bytes they read of storages without a CRC-32 of their own
  // (storage_pieces.h): check_piece_sources then need not read them again.
  ReadLog* source_reads = nullptr;
  bool verified = false;  // the output will be verified: a sink may check as it writes
  // Set after writing: the writer's reads that lie inside records
  // check_piece_sources proves (reads_inside), for verification.
  const ReadLog* proven_reads = nullptr;
};

// The CastCheck a sink writes `request` with (reference_cast_check): none
// when the output is not verified or `--dtype` casts nothing.
std::optional<CastCheck> cast_check_for(const WriteRequest& request);

// Two or more names of one state dict whose bytes overlap, and what the sink
// did with them.
struct TiedNames {
  std::string kept;                  // the name kept (copy: the first)
  std::vector<std::string> aliases;  // the others
  bool deduplicated = false;         // the aliases were not written (`--tied dedupe`)
};

// One file of a sharded output.
struct ShardWritten {
  std::string file;    // its name in OUT
  size_t tensors = 0;  // names it holds
  uint64_t bytes = 0;  // the file's size
};

// What a sink wrote, for the report.
struct Written {
  uint64_t bytes = 0;          // the file's size
  size_t tensors = 0;          // tensors written
  size_t storages = 0;         // storages (byte ranges) written
  uint64_t storage_bytes = 0;  // their bytes
  std::vector<TiedNames> tied;
  std::vector<ShardWritten> shards;  // a sharded output's files, index last; else empty
};

// One output format's writer, for one conversion: `prepare`, then `write`,
// then `verify`.
class Sink {
public:
  virtual ~Sink() = default;
  // Refuses what the format cannot hold (throws `FormatError` naming the key
  // and the cause) and plans the layout; nothing is written yet.
  virtual void prepare(const WriteRequest& request) = 0;
  // Writes the output into temporary files it creates in `out` (OUT itself,
  // or the files of the folder OUT); messages name `request.shown_as`.
  // Throws `Error` on I/O failure.
  virtual Written write(const WriteRequest& request, OutputFiles& out) = 0;
  // Proves the temporary files written hold what was meant: it rereads them
  // through the reader table and checks their layout and every tensor.
  // Throws `Error` with status "verification failed" naming the file and the
  // first difference. Reads no node of `request.root` (freed by then).
  virtual VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                              const std::string& device) = 0;
  // After `prepare`: the files a folder sink will write (bytes: a safetensors
  // shard's exact size, a torch shard's storage bytes), for `--dry-run`.
  virtual std::vector<ShardWritten> planned() const { return {}; }
  // After the files are renamed into place: removes what they replace
  // (stale shards). Throws `Error` when it cannot.
  virtual void after_commit(const WriteRequest& /*request*/) {}
};

struct SinkFormat {
  const char* name;       // `--format` value and the report's `output_format`: "pt"
  const char* described;  // for `--help` and messages: "a torch.save zip archive"
  // True when OUT's name asks for this format (`.safetensors`).
  bool (*claims)(const std::string& output);
  // True when the format holds only a state dict (the model's is selected as
  // `--extract` selects it).
  bool state_dict_only;
  // True when OUT is a folder the sink writes files into (created if need be).
  bool writes_folder;
  std::unique_ptr<Sink> (*make)();
};

// The formats `convert` writes; the first is the default.
const std::vector<SinkFormat>& sink_formats();

// The sink for OUT: with `sharded` (`--max-shard-size`) the folder of shards
// of `format` (safetensors by default); else the one named `format` when
// given (`pt`, `safetensors`), else the first that claims OUT's name, else the
// default. Throws `Error` (usage) for an unknown `format`, naming those there
// are.
const SinkFormat& choose_sink(const std::string& output, const std::string& format,
                              bool sharded = false);

}  // namespace ckpt
