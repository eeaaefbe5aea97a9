// This file verifies a written checkpoint before it is renamed into place.
//
// Independent checks must agree with what we meant to write: our reader
// decodes the file again (and its re-encoding must give back the same pickle
// bytes, so the structure is exactly what was meant); every tensor's layout
// and storage sharing match; every storage holds its source's bytes and the
// CRC-32 its record carries (see check_storage); and for a GPU, LibTorch (the plugin) copies each tensor
// there and back. On the CPU the tensors are the very bytes compared, so
// LibTorch is not loaded for them. That the archive is what torch's own
// reader expects is proven once and for all by the writer's byte-for-byte
// test against PyTorchStreamWriter.
#include "ckpt/verify.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>
#include <unordered_map>

#include <zlib.h>

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
constexpr uint64_t k_read_from = 64 << 10;

[[noreturn]] void mismatch(const std::string& path, const std::string& what) {
  throw Error(path + ": verification failed: " + what, ExitStatus::k_verify_failed);
}

std::string describe(size_t index, const TensorRef& ref) {
  return "tensor #" + std::to_string(index) + " (" + std::string(dtype_name(ref.dtype)) + ")";
}

// Reports `n` more bytes done and lets their pages go.
class Progress {
public:
  Progress(uint64_t total, const std::function<void(const char*, uint64_t, uint64_t)>& report)
      : m_total(total), m_report(report) {}
  void done(uint64_t n) {
    m_done += n;
    if (m_report) {
      m_report("verify", m_done, m_total);
    }
  }

private:
  uint64_t m_done = 0;
  uint64_t m_total;
  const std::function<void(const char*, uint64_t, uint64_t)>& m_report;
};

// The CRC-32 of `size` bytes at `offset` of `file`, read a megabyte at a time
// into a buffer that stays in the CPU's cache. (Summing the mapped pages in
// place costs twice as much: the kernel must map every page first.) Returns
// false, with errno set or 0 for the end of the file, when a read fails.
bool crc32_of_range(const MappedFile& file, uint64_t offset, uint64_t size, uint32_t& crc) {
  constexpr uint64_t k_buffer = 1 << 20;
  std::vector<uint8_t> buffer(std::min(size, k_buffer));
  crc = 0;
  for (uint64_t at = 0; at < size;) {
    uint64_t n = std::min(k_buffer, size - at);
    if (read_at(file.fd(), buffer.data(), n, offset + at) != n) {
      return false;
    }
    crc = crc32_update(crc, buffer.data(), n);
    at += n;
  }
  return true;
}

// The CRC-32 of `bytes`, a storage of the mapped `file`, read from the file
// from 64 KiB on.
// One core reads and sums about 4 GB/s of page cache (1.3 GB: 0.31 s), so a
// storage of 4 MiB or more is split in two halves summed on two threads and
// combined (0.18 s); a thread costs tens of microseconds, 4 MiB about one
// millisecond.
uint32_t crc32_streamed(const MappedFile& file, const std::string& shown_as, ByteSpan bytes,
                        Progress& progress) {
  constexpr uint64_t k_split_from = 4 << 20;
  if (bytes.size < k_read_from) {
    // A small storage: a syscall would cost more than its few page faults.
    progress.done(bytes.size);
    return crc32_update(0, bytes.data, bytes.size);
  }
  uint64_t offset = static_cast<uint64_t>(bytes.data - file.bytes().data);
  uint64_t first_size = bytes.size;
  uint32_t first = 0;
  uint32_t second = 0;
  bool second_read = true;
  int second_error = 0;
  std::thread helper;
  if (bytes.size >= k_split_from && std::thread::hardware_concurrency() >= 2) {
    first_size = bytes.size / 2;
    helper = std::thread([&] {
      second_read = crc32_of_range(file, offset + first_size, bytes.size - first_size, second);
      second_error = errno;
    });
  }
  bool first_read = crc32_of_range(file, offset, first_size, first);
  int error = errno;
  if (helper.joinable()) {
    helper.join();
  }
  if (!first_read || !second_read) {
    int cause = !first_read ? error : second_error;
    mismatch(shown_as, std::string("cannot reread the output's tensor data: ") +
                           (cause != 0 ? std::strerror(cause) : "the file was truncated"));
  }
  uint32_t crc = first;
  if (first_size < bytes.size) {
    crc = static_cast<uint32_t>(
        ::crc32_combine(first, second, static_cast<z_off_t>(bytes.size - first_size)));
  }
  progress.done(bytes.size);
  return crc;
}

// Where `a` and `b` (of one size) first differ, compared a chunk at a time.
std::optional<uint64_t> first_difference(ByteSpan a, ByteSpan b) {
  for (uint64_t at = 0; at < a.size; at += k_chunk) {
    uint64_t n = std::min(k_chunk, a.size - at);
    if (std::memcmp(a.data + at, b.data + at, n) != 0) {
      return at;
    }
    release_pages({a.data + at, n});
    release_pages({b.data + at, n});
  }
  return std::nullopt;
}

// Checks that `written` holds the bytes of `source` and the CRC-32 its record
// carries. A zip input's record carries the CRC-32 torch computed when it
// saved them, and the written record the same one: then reading the output
// once proves both (a CRC-32 catches every burst of up to 32 flipped bits,
// and all but one in four billion other damage). Only when that fails, or
// the input has no CRC-32 (legacy format), are the bytes compared with the
// source, which also tells whose bytes are damaged.
void check_storage(const std::string& shown_as, const std::string& input_records,
                   const MappedFile& output, const Storage& source, const Storage& written,
                   Progress& progress) {
  const ByteSpan& a = source.bytes;
  const ByteSpan& b = written.bytes;
  std::string name = "data/" + written.key;
  if (a.size != b.size) {
    mismatch(shown_as, name + " holds " + std::to_string(b.size) + " bytes, its source " +
                           std::to_string(a.size));
  }
  bool same_crc_as_input = source.has_crc32 && written.has_crc32 && written.crc32 == source.crc32;
  if (same_crc_as_input && crc32_streamed(output, shown_as, b, progress) == written.crc32) {
    return;
  }
  if (std::optional<uint64_t> at = first_difference(a, b)) {
    mismatch(shown_as, name + " differs from its source near byte " + std::to_string(*at));
  }
  if (same_crc_as_input) {
    // The bytes equal the input's, which fail the CRC-32 of the input record.
    throw Error(input_records + source.key + ": CRC-32 mismatch: the tensor data is corrupt "
                "(the file was damaged after it was saved)");
  }
  if (!written.has_crc32 || crc32_streamed(output, shown_as, b, progress) != written.crc32) {
    mismatch(shown_as, name + ": the CRC-32 in the archive does not match its bytes");
  }
}

}  // namespace

VerifyReport verify_output(const std::vector<TensorRef>& sources, const std::string& pickle,
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

  const std::vector<TensorRef>& outputs = written.tensors;
  if (sources.size() != outputs.size()) {
    mismatch(shown_as, std::to_string(outputs.size()) + " tensors written, " +
                           std::to_string(sources.size()) + " expected");
  }
  uint64_t total = 0;
  for (const Storage& storage : written.graph.storages()) {
    total += storage.bytes.size;
  }
  Progress verified(total, progress);
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
      check_storage(shown_as, input_records, written.file, *src.storage, *out.storage, verified);
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
