// The default sink: a torch.save zip archive. The object graph is encoded
// back into a pickle (keys and locations rewritten, nothing else changed)
// and written with every storage's bytes, laid out as LibTorch's
// PyTorchStreamWriter lays them out (writer.h); verification rereads it and
// checks that its pickle re-encodes identically and that every storage holds
// its source's bytes (verify.h).
#include <memory>
#include <string>

#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "ckpt/sink.h"
#include "ckpt/writer.h"

namespace ckpt {
namespace {

class TorchSink final : public Sink {
public:
  void prepare(const WriteRequest& request) override {
    if (request.options.dtype) {
      throw Error("--dtype: casting is done for .safetensors output only so far; write "
                  "OUT.safetensors (or --format safetensors)", ExitStatus::k_usage);
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
      written.storage_bytes += storage->bytes.size;
    }
    written.bytes = write_checkpoint(m_encoded, fd, request.shown_as, request.progress);
    return written;
  }

  VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                      const std::string& device) override {
    VerifySource source{request.input, request.input_records};
    return verify_output(*request.tensors, m_encoded.bytes, out.files().front().path(),
                         request.shown_as, device, source, request.progress);
  }

private:
  EncodedPickle m_encoded;
};

bool claims_torch(const std::string& /*output*/) { return false; }

std::unique_ptr<Sink> make_torch_sink() { return std::make_unique<TorchSink>(); }

}  // namespace

extern const SinkFormat k_torch_sink{"pt", "a torch.save zip archive", claims_torch, false,
                                     false, make_torch_sink};

}  // namespace ckpt
