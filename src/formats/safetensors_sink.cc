// The safetensors sink: the model's state dict in one `.safetensors` file,
// as safetensors_writer.cc writes it.
#include <memory>
#include <string>

#include "ckpt/sink.h"
#include "formats/safetensors_writer.h"

namespace ckpt {
namespace {

class SafetensorsSink final : public Sink {
public:
  void prepare(const WriteRequest& request) override {
    StateDictPlan plan = plan_state_dict(request);
    m_tied = std::move(plan.tied);
    m_file.emplace(std::move(plan.entries));
    m_check = cast_check_for(request);
  }

  Written write(const WriteRequest& request, OutputFiles& out) override {
    const TempFile& file = out.create(request.shown_as);
    if (request.verified) {
      m_reread = std::make_unique<RereadBehind>(file.path());
    }
    m_file->write(file.fd(), request.shown_as, request.progress, 0, m_file->size(),
                  m_check ? &*m_check : nullptr, m_reread.get());
    if (m_reread) {
      m_reread->close();
    }
    Written written;
    written.tensors = m_file->tensors();
    written.storages = m_file->tensors();
    written.storage_bytes = m_file->data_size();
    written.bytes = m_file->size();
    written.tied = m_tied;
    return written;
  }

  VerifyReport verify(const WriteRequest& request, const OutputFiles& out,
                      const std::string& device) override {
    if (m_reread) {
      m_reread->wait();
    }
    return m_file->verify(out.files().front().path(), request.shown_as, device,
                          {request.input, request.input_records, request.source_reads,
                           request.proven_reads, m_check ? &*m_check : nullptr,
                           m_reread.get()});
  }

private:
  std::optional<SafetensorsFile> m_file;
  std::vector<TiedNames> m_tied;
  std::optional<CastCheck> m_check;  // with --dtype, when verified
  std::unique_ptr<RereadBehind> m_reread;  // when verified
};

bool claims_safetensors(const std::string& output) {
  const std::string suffix = ".safetensors";
  return output.size() >= suffix.size() &&
         output.compare(output.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<Sink> make_safetensors_sink() { return std::make_unique<SafetensorsSink>(); }

}  // namespace

extern const SinkFormat k_safetensors_sink{"safetensors", "a safetensors file", claims_safetensors,
                                           true, false, make_safetensors_sink};

}  // namespace ckpt
