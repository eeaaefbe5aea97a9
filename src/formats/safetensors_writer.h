// The safetensors writer behind the two sinks that write the format (one
// file, and a folder of HF shards): which names of a state dict are written
// and how, and one file of them written and verified. Internal to
// src/formats/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/reread_behind.h"
#include "ckpt/safetensors_codec.h"
#include "ckpt/sink.h"

namespace ckpt {

// One name of the state dict and the tensor it names.
struct NamedTensor {
  std::string name;
  TensorRef tensor;
  Dtype written_dtype = Dtype::k_float32;  // the tensor's, or the `--dtype` it is cast to
  bool written = true;  // false: an alias (`--tied dedupe`), recorded in `__metadata__`
  std::string kept;     // for an alias: the name written in its place
};

// The state dict of a request as safetensors holds it.
struct StateDictPlan {
  std::vector<NamedTensor> entries;  // in the state dict's order
  std::vector<TiedNames> tied;       // names whose bytes overlap, and what was done
};

// The names and tensors of the state dict `request.root`, each with the
// dtype it is written as, and the tied names planned as `--tied` asks (see
// safetensors_sink.cc). Throws `FormatError` naming the key of an entry
// safetensors cannot hold (not a tensor, quantized, a dtype it lacks), and
// `Error` (usage) for a `--keep-tied` name that names no tied tensor.
StateDictPlan plan_state_dict(const WriteRequest& request);

// One safetensors file holding `entries` (a whole plan's, or one shard's):
// the written ones as tensors, the aliases as `removed: kept` in
// `__metadata__` beside `"format": "pt"`.
class SafetensorsFile {
public:
  // Lays out the header; throws `FormatError` as serialize_safetensors_header.
  explicit SafetensorsFile(std::vector<NamedTensor> entries);

  uint64_t size() const { return m_layout.header.size() + m_layout.data_size; }
  uint64_t data_size() const { return m_layout.data_size; }
  size_t tensors() const { return m_layout.tensors.size(); }
  const std::vector<NamedTensor>& entries() const { return m_entries; }

  // Writes the file to `fd`; `progress` hears ("write", `done` + bytes
  // written so far, `total`). With `check`, casts of whole records are
  // checked as they are written (CastCheck); with `reread`, each tensor's
  // bytes are announced to it once written. Throws `Error` naming `shown_as`.
  void write(int fd, const std::string& shown_as, const ProgressFn& progress, uint64_t done,
             uint64_t total, CastCheck* check = nullptr, RereadBehind* reread = nullptr) const;
  // Rereads the file at `path` through the reader table: the header must be
  // the one laid out, every name there (an alias as a view of its kept
  // name's storage), every tensor's bytes its source's, cast as written.
  // Throws `Error` (verification failed) naming `shown_as`, or naming the
  // record of `input` whose bytes fail their CRC-32.
  VerifyReport verify(const std::string& path, const std::string& shown_as,
                      const std::string& device, const VerifySource& input) const;

private:
  // Compares every entry with its tensor read back (`outputs[i]` for
  // `m_entries[i]`), two at a time; returns the bytes of the written ones.
  uint64_t compare_all(const std::vector<const TensorRef*>& outputs,
                       const std::string& shown_as, const VerifySource& input) const;

  std::vector<NamedTensor> m_entries;
  std::vector<size_t> m_header_entry;  // header index -> m_entries index
  SafetensorsLayout m_layout;
};

}  // namespace ckpt
