// The default sink: a torch.save zip archive. The object graph is encoded
// back into a pickle (keys and locations rewritten, nothing else changed)
// and written with every storage's bytes, laid out as LibTorch's
// PyTorchStreamWriter lays them out (writer.h); verification rereads it and
// checks that its pickle re-encodes identically and that every storage holds
// its source's bytes (verify.h).
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/rewrite.h"
#include "ckpt/sink.h"
#include "ckpt/writer.h"

namespace ckpt {
namespace {

class TorchSink final : public Sink {
public:
  void prepare(const WriteRequest& request) override {
    if (request.options.dtype) {
      retype_storages(request);
    }
  }

  Written write(const WriteRequest& request, OutputFiles& out) override {
    int fd = out.create(request.shown_as).fd();
    // Rules that lengthen keys grow a pickle a little; only a pickle that
    // refers to one object over and over grows 16-fold (see encode_pickle).
    m_encoded = encode_pickle(request.root, 1000, 16 * request.pickle_bytes + (64 << 20),
                              request.pickle_bytes + request.pickle_bytes / 8);
    Written written;
    written.tensors = request.tensors->size();
    written.storages = m_encoded.storages.size();
    for (const Storage* storage : m_encoded.storages) {
      written.storage_bytes += static_cast<uint64_t>(storage->numel) * element_size(storage->dtype);
    }
    written.bytes = write_checkpoint(m_encoded, fd, request.shown_as, request.progress, m_casts);
    return written;
  }

  VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                      const std::string& device) override {
    VerifySource source{request.input, request.input_records};
    return verify_output(*request.tensors, m_encoded.bytes, out.files().front().path(),
                         request.shown_as, device, source, request.progress, m_casts);
  }

private:
  // `--dtype`: gives each storage whose tensors are all to be cast the
  // target's typed storage class (`torch.BFloat16Storage`), so that the
  // pickle rebuilds them in that dtype, and records it for the writer. A
  // storage one of whose names `--keep-dtype` keeps is kept whole (its other
  // names share its bytes). Tensors outside a state dict have no name and are
  // cast as `--dtype` says. Untyped storages (torch 2.x's uint16 and float8)
  // hold no castable dtype.
  void retype_storages(const WriteRequest& request) {
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
      bool cast = to != t.dtype && t.storage->dtype == t.dtype && !t.quantized;
      auto [it, added] = target.try_emplace(t.storage, cast ? std::optional<Dtype>(to) : std::nullopt);
      if (!added && it->second != (cast ? std::optional<Dtype>(to) : std::nullopt)) {
        it->second = std::nullopt;
      }
    }
    for (auto& [storage, to] : target) {
      if (!to) {
        continue;
      }
      m_casts.emplace(storage, storage->dtype);
      storage->type = request.graph->make_global("torch", std::string(storage_class_name(*to)));
      storage->dtype = *to;
    }
  }

  EncodedPickle m_encoded;
  StorageCasts m_casts;  // storages written cast, with their bytes' dtype
};

bool claims_torch(const std::string& /*output*/) { return false; }

std::unique_ptr<Sink> make_torch_sink() { return std::make_unique<TorchSink>(); }

}  // namespace

extern const SinkFormat k_torch_sink{"pt", "a torch.save zip archive", claims_torch, false,
                                     false, make_torch_sink};

}  // namespace ckpt
