// One torch.save zip archive written from an object of the graph: what the
// torch sink writes for OUT, and what the shards sink writes for each
// `pytorch_model-0000k-of-0000N.bin`. Internal to src/formats/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/verify.h"

#include "ckpt/pickle.h"
#include "ckpt/sink.h"
#include "ckpt/writer.h"

namespace ckpt {

// `--dtype`: gives each storage of `tensors` whose tensors are all to be
// cast (written_dtype of their state-dict name) the target's typed storage
// class, so that the pickle rebuilds them in that dtype with offsets and
// strides unchanged; returns them with the dtype their bytes are in. A
// storage one of whose names `--keep-dtype` keeps stays whole. Tensors
// outside a state dict have no name and are cast as `--dtype` says; untyped
// storages (torch 2.x's uint16 and float8) have no castable dtype.
StorageCasts retype_for_dtype(const WriteRequest& request);

class TorchArchive {
public:
  // Encodes `root` (whose tensors are `tensors`, in pickle order, kept by
  // the archive); `size_hint` is the input pickle's size. Throws
  // `FormatError` as encode_pickle.
  TorchArchive(const Node* root, std::vector<TensorRef> tensors, uint64_t size_hint);
  // The same over tensors that outlive the archive (not copied).
  TorchArchive(const Node* root, const std::vector<TensorRef>* tensors, uint64_t size_hint);
  TorchArchive(const TorchArchive&) = delete;  // m_tensors may point into it
  TorchArchive& operator=(const TorchArchive&) = delete;

  // The storage bytes it holds (cast as `casts` says) and its storage count.
  uint64_t storage_bytes() const;
  size_t storages() const { return m_encoded.storages.size(); }
  size_t tensors() const { return m_tensors->size(); }
  // Writes it to `fd`, noting in `reads` (when set) what it reads of
  // storages without a CRC-32 (write_checkpoint); returns its size.
  // With `check`, casts are checked as they are written (CastCheck); with
  // `reread`, large storages are announced to it once written.
  uint64_t write(int fd, const std::string& shown_as, const ProgressFn& progress,
                 const StorageCasts& casts, ReadLog* reads, CastCheck* check,
                 RereadBehind* reread = nullptr) const;
  // verify_output against the tensors it was made of; `checked`: the
  // CastCheck it was written with, if any; `reread`: what was reread
  // behind the writer (waited for), if anything.
  VerifyReport verify(const std::string& path, const std::string& shown_as,
                      const std::string& device, const WriteRequest& request,
                      const StorageCasts& casts, const CastCheck* checked,
                      const RereadBehind* reread = nullptr) const;

private:
  EncodedPickle m_encoded;
  std::vector<TensorRef> m_own;              // the tensors when the archive keeps them
  const std::vector<TensorRef>* m_tensors;   // &m_own, or the caller's
};

}  // namespace ckpt
