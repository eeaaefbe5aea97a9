// The default sink: a torch.save zip archive. The object graph is encoded
// back into a pickle (keys and locations rewritten, nothing else changed)
// and written with every storage's bytes, laid out as LibTorch's
// PyTorchStreamWriter lays them out (writer.h); verification rereads it and
// checks that its pickle re-encodes identically and that every storage holds
// its source's bytes (verify.h), or with `--dtype` its source's cast.
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "ckpt/rewrite.h"
#include "ckpt/sink.h"
#include "formats/torch_archive.h"

namespace ckpt {

StorageCasts retype_for_dtype(const WriteRequest& request) {
  StorageCasts casts;
  if (!request.options.dtype) {
    return casts;
  }
  std::unordered_map<const Node*, std::string> names;
  for (const StateDictRef& sd : find_state_dicts(request.root)) {
    for (const NodeEntry& entry : sd.dict->entries) {
      if (entry.first->is_str()) {
        names.emplace(entry.second, entry.first->text.str());
      }
    }
  }
  std::unordered_map<Storage*, std::optional<Dtype>> target;  // nullopt: keep
  for (const TensorRef& t : *request.tensors) {
    auto name = names.find(t.node);
    Dtype to = written_dtype(request.options, name != names.end() ? name->second : "", t.dtype);
    std::optional<Dtype> wanted;
    if (to != t.dtype && t.storage->dtype == t.dtype && !t.quantized) {
      wanted = to;
    }
    auto [it, added] = target.try_emplace(t.storage, wanted);
    if (!added && it->second != wanted) {
      it->second = std::nullopt;
    }
  }
  for (auto& [storage, to] : target) {
    if (!to) {
      continue;
    }
    casts.emplace(storage, storage->dtype);
    storage->type = request.graph->make_global("torch", std::string(storage_class_name(*to)));
    storage->dtype = *to;
  }
  return casts;
}

TorchArchive::TorchArchive(const Node* root, const std::vector<TensorRef>* tensors,
                           uint64_t size_hint)
    // Rules that lengthen keys grow a pickle a little; only a pickle that
    // refers to one object over and over grows 16-fold (see encode_pickle).
    : m_encoded(encode_pickle(root, 1000, 16 * size_hint + (64 << 20), size_hint + size_hint / 8)),
      m_tensors(tensors) {}

TorchArchive::TorchArchive(const Node* root, std::vector<TensorRef> tensors, uint64_t size_hint)
    : TorchArchive(root, nullptr, size_hint) {
  m_own = std::move(tensors);
  m_tensors = &m_own;
}

uint64_t TorchArchive::storage_bytes() const {
  uint64_t bytes = 0;
  for (const Storage* storage : m_encoded.storages) {
    bytes += static_cast<uint64_t>(storage->numel) * element_size(storage->dtype);
  }
  return bytes;
}

uint64_t TorchArchive::write(int fd, const std::string& shown_as, const ProgressFn& progress,
                             const StorageCasts& casts, ReadLog* reads, CastCheck* check,
                             RereadBehind* reread) const {
  return write_checkpoint(m_encoded, fd, shown_as, progress, casts, reads, check, reread);
}

VerifyReport TorchArchive::verify(const std::string& path, const std::string& shown_as,
                                  const std::string& device, const WriteRequest& request,
                                  const StorageCasts& casts, const CastCheck* checked,
                                  const RereadBehind* reread) const {
  VerifySource source{request.input, request.input_records, request.source_reads,
                      request.proven_reads, checked, reread};
  return verify_output(*m_tensors, m_encoded.bytes, path, shown_as, device, source,
                       request.progress, casts);
}

namespace {

class TorchSink final : public Sink {
public:
  void prepare(const WriteRequest& request) override {
    m_casts = retype_for_dtype(request);
    m_check = cast_check_for(request);
  }

  Written write(const WriteRequest& request, OutputFiles& out) override {
    const TempFile& file = out.create(request.shown_as);
    if (request.verified) {
      m_reread = std::make_unique<RereadBehind>(file.path());
    }
    m_archive.emplace(request.root, request.tensors, request.pickle_bytes);
    Written written;
    written.tensors = m_archive->tensors();
    written.storages = m_archive->storages();
    written.storage_bytes = m_archive->storage_bytes();
    written.bytes = m_archive->write(file.fd(), request.shown_as, request.progress, m_casts,
                                     request.source_reads, m_check ? &*m_check : nullptr,
                                     m_reread.get());
    if (m_reread) {
      m_reread->close();
    }
    return written;
  }

  VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                      const std::string& device) override {
    if (m_reread) {
      m_reread->wait();
    }
    return m_archive->verify(out.files().front().path(), request.shown_as, device, request,
                             m_casts, m_check ? &*m_check : nullptr, m_reread.get());
  }

private:
  std::optional<TorchArchive> m_archive;
  StorageCasts m_casts;  // storages written cast, with their bytes' dtype
  std::optional<CastCheck> m_check;
  std::unique_ptr<RereadBehind> m_reread;  // when verified
};

bool claims_torch(const std::string& /*output*/) { return false; }

std::unique_ptr<Sink> make_torch_sink() { return std::make_unique<TorchSink>(); }

}  // namespace

extern const SinkFormat k_torch_sink{"pt", "a torch.save zip archive", claims_torch, false,
                                     false, make_torch_sink};

}  // namespace ckpt
