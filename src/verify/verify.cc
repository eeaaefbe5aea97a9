// This file verifies a written checkpoint before it is renamed into place.
//
// Independent checks must agree with what we meant to write: our reader
// decodes the file again (and its re-encoding must give back the same pickle
// bytes, so the structure is exactly what was meant); every tensor's layout
// and storage sharing match; every storage equals its source and the CRC-32
// its record carries; and for a GPU, LibTorch (the plugin) copies each tensor
// there and back. On the CPU the tensors are the very bytes compared, so
// LibTorch is not loaded for them. That the archive is what torch's own
// reader expects is proven once and for all by the writer's byte-for-byte
// test against PyTorchStreamWriter.
#include "ckpt/verify.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "ckpt/pickle.h"
#include "ckpt/tensor.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

constexpr uint64_t k_chunk = 32ull << 20;

[[noreturn]] void mismatch(const std::string& path, const std::string& what) {
  throw Error(path + ": verification failed: " + what, ExitStatus::k_verify_failed);
}

std::string describe(size_t index, const TensorRef& ref) {
  return "tensor #" + std::to_string(index) + " (" + std::string(dtype_name(ref.dtype)) + ")";
}

// Compares `written` with `source` chunk by chunk, checking the CRC-32 the
// written record carries, and lets each chunk's pages go once compared.
void compare_storage(const std::string& shown_as, const std::string& input_records,
                     const Storage& source, const Storage& written, uint64_t& done, uint64_t total,
                     const std::function<void(const char*, uint64_t, uint64_t)>& progress) {
  const ByteSpan& a = source.bytes;
  const ByteSpan& b = written.bytes;
  std::string name = "data/" + written.key;
  if (a.size != b.size) {
    mismatch(shown_as, name + " holds " + std::to_string(b.size) + " bytes, its source " +
                           std::to_string(a.size));
  }
  uint32_t crc = 0;
  for (uint64_t at = 0; at < a.size; at += k_chunk) {
    uint64_t n = std::min(k_chunk, a.size - at);
    if (std::memcmp(a.data + at, b.data + at, n) != 0) {
      mismatch(shown_as, name + " differs from its source near byte " + std::to_string(at));
    }
    crc = crc32_update(crc, b.data + at, n);
    release_pages({a.data + at, n});
    release_pages({b.data + at, n});
    done += n;
    if (progress) {
      progress("verify", done, total);
    }
  }
  if (written.has_crc32 && crc == written.crc32) {
    return;
  }
  if (source.has_crc32 && written.has_crc32 && written.crc32 == source.crc32) {
    // The CRC-32 was copied from the input record, whose bytes equal ours.
    throw Error(input_records + source.key + ": CRC-32 mismatch: the tensor data is corrupt "
                "(the file was damaged after it was saved)");
  }
  mismatch(shown_as, name + ": the CRC-32 in the archive does not match its bytes");
}

}  // namespace

VerifyReport verify_output(const Node* expected, const std::string& pickle,
                           const std::string& path, const std::string& shown_as,
                           const std::string& device,
                           const std::string& input_records,
                           const std::function<void(const char*, uint64_t, uint64_t)>& progress) {
  VerifyReport report;
  report.device = device;
  bool on_cpu = is_cpu_device(device);
  Checkpoint written;
  try {
    written = read_checkpoint(path);
  } catch (const Error& e) {
    mismatch(shown_as, std::string("cannot reread the output: ") + e.what());
  }

  if (encode_pickle(written.graph.root).bytes != pickle) {
    mismatch(shown_as, "the written pickle decodes to a different object graph");
  }

  std::vector<TensorRef> sources = tensors_reachable(expected);
  std::vector<TensorRef> outputs = tensors_reachable(written.graph.root);
  if (sources.size() != outputs.size()) {
    mismatch(shown_as, std::to_string(outputs.size()) + " tensors written, " +
                           std::to_string(sources.size()) + " expected");
  }
  uint64_t total = 0;
  for (const Storage& storage : written.graph.storages()) {
    total += storage.bytes.size;
  }
  uint64_t done = 0;
  std::unordered_map<const Storage*, const Storage*> source_to_output;
  std::unordered_map<const Storage*, const Storage*> output_to_source;
  for (size_t i = 0; i < sources.size(); ++i) {
    const TensorRef& src = sources[i];
    const TensorRef& out = outputs[i];
    if (src.dtype != out.dtype || src.sizes != out.sizes || src.strides != out.strides ||
        src.offset != out.offset || src.requires_grad != out.requires_grad ||
        src.parameter != out.parameter) {
      mismatch(shown_as, describe(i, src) + " differs in dtype, size, stride or offset");
    }
    auto [to_out, new_pair] = source_to_output.emplace(src.storage, out.storage);
    auto [to_src, new_back] = output_to_source.emplace(out.storage, src.storage);
    if (to_out->second != out.storage || to_src->second != src.storage) {
      mismatch(shown_as, describe(i, src) + " does not share storage as its source does");
    }
    if (new_pair) {
      compare_storage(shown_as, input_records, *src.storage, *out.storage, done, total, progress);
      ++report.storages;
      report.bytes += src.storage->bytes.size;
    }
    ++report.tensors;
    if (on_cpu) {
      ++report.device_checked;
      continue;
    }
    if (out.quantized || out.byte_extent() == 0) {
      continue;
    }
    std::string why = round_trip(device, out, src);
    if (!why.empty()) {
      mismatch(shown_as, describe(i, src) + " " + why);
    }
    ++report.device_checked;
  }
  return report;
}

}  // namespace ckpt
