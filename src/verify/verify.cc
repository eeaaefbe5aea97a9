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
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/pickle.h"
#include "ckpt/tensor.h"
#include "ckpt/torch_plugin.h"
#include "reference_cast.h"
#include "util/two_halves.h"

namespace ckpt {
namespace {

[[noreturn]] void mismatch(const std::string& path, const std::string& what) {
  verification_failed(path, what);
}

std::string describe(size_t index, const TensorRef& ref) {
  return "tensor #" + std::to_string(index) + " (" + std::string(dtype_name(ref.dtype)) + ")";
}

// Tells the caller's progress callback of bytes verified.
class Progress {
public:
  Progress(uint64_t total, const ProgressFn& report)
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
  const ProgressFn& m_report;
};

// Storage bytes are read a megabyte at a time into buffers that stay in the
// CPU's cache: summing or comparing mapped page-cache pages in place costs
// twice as much, since the kernel must map every page first. Storages under
// 64 KiB are read in place: a syscall each would cost more than their few
// page faults (50,000 small tensors). A storage of 1 MiB or more is read in
// two halves on two threads (util/two_halves.h; 1.3 GB: 0.31 -> 0.18 s).
// (Compared in place, storages go a chunk at a time, whose pages are let go
// after.)
constexpr uint64_t k_read_from = 64 << 10;
constexpr uint64_t k_buffer = 1 << 20;
constexpr uint64_t k_chunk = 32ull << 20;

// Where a storage's bytes are read from: `fd` at `offset` (for a source, -1
// when it is only in memory), or the pieces of `pieced` (a source
// consolidated from several files); `name` is the file for messages.
struct StorageFile {
  int fd;
  uint64_t offset;
  const std::string& name;
  bool is_output;
  const Storage* pieced = nullptr;
  ReadLog* reads = nullptr;  // a source's: where what is read of it is logged

  bool readable() const { return fd >= 0 || pieced != nullptr; }
};

// The StorageFile of an input storage.
StorageFile source_file_of(const Storage& source, const StorageBytes& where,
                           const VerifySource& input) {
  return {where.file != nullptr ? where.file->fd() : -1, where.file_offset, input.path, false,
          has_pieces(source) ? &source : nullptr, input.reads};
}

// Reads bytes [`at`, `at` + `n`) of `file` into `to`; with `log`, notes the
// CRC-32 of each run read from a file (storage_pieces.h's ReadPart).
void read_chunk(const StorageFile& file, uint8_t* to, uint64_t n, uint64_t at,
                ReadLog* log = nullptr) {
  if (file.pieced != nullptr) {
    read_storage_range(*file.pieced, at, to, n, log);
    return;
  }
  if (read_at(file.fd, to, n, file.offset + at) == n) {
    if (log != nullptr) {
      log->push_back({file.fd, file.offset + at, n, crc32_update(0, to, n)});
    }
    return;
  }
  int cause = errno;  // 0: the file ended early
  if (!file.is_output) {
    if (cause == 0) {
      throw truncated_while_read(file.name);  // the input changed under us
    }
    throw Error(file.name + ": cannot read: " + std::strerror(cause));
  }
  mismatch(file.name, std::string("cannot reread the output's tensor data: ") +
                          (cause != 0 ? std::strerror(cause) : "the file was truncated"));
}

// The byte comparison of a storage with its source.
struct Comparison {
  std::optional<uint64_t> first_difference;  // near which byte they differ
  uint32_t written_crc32 = 0;                // of the written bytes, when equal
};

// Reads `size` bytes of `written` (and, when given, the same of `source`
// beside them, compared chunk by chunk) through cached buffers, in two
// halves from 1 MiB (see above), summing the written bytes' CRC-32.
// The source's reads are logged when it has a log (StorageFile::reads).
Comparison read_storage(const StorageFile& written, uint64_t size, const StorageFile* source) {
  uint64_t differs[2] = {UINT64_MAX, UINT64_MAX};
  uint32_t sums[2] = {0, 0};
  ReadLog logs[2];
  bool logged = source != nullptr && source->reads != nullptr;
  uint64_t half = in_two_halves(size, [&](uint64_t begin, uint64_t end) {
    std::vector<uint8_t> b(std::min(end - begin, k_buffer));
    std::vector<uint8_t> a(source != nullptr ? b.size() : 0);
    int which = begin == 0 ? 0 : 1;
    for (uint64_t at = begin; at < end; at += b.size()) {
      uint64_t n = std::min<uint64_t>(b.size(), end - at);
      if (source != nullptr) {
        read_chunk(*source, a.data(), n, at, logged ? &logs[which] : nullptr);
      }
      read_chunk(written, b.data(), n, at);
      if (source != nullptr && std::memcmp(a.data(), b.data(), n) != 0) {
        differs[which] = at;
        return;
      }
      sums[which] = crc32_update(sums[which], b.data(), n);
    }
  });
  if (logged) {
    for (const ReadLog& log : logs) {
      source->reads->insert(source->reads->end(), log.begin(), log.end());
    }
  }
  Comparison result;
  if (std::min(differs[0], differs[1]) != UINT64_MAX) {
    result.first_difference = std::min(differs[0], differs[1]);
    return result;
  }
  result.written_crc32 = crc32_combine(sums[0], sums[1], size - half);
  return result;
}

// The CRC-32 of the bytes of a storage of the output, which lie in its
// mapped file, read here (see above); or `expected` when the output was
// reread behind the writer (input.reread) and that found it for exactly
// their range. Any other sum the reread noted is not taken: the bytes are
// read again, so that a difference is judged by the file as it is now.
uint32_t crc32_streamed(const StorageBytes& where, uint32_t expected,
                        const std::string& shown_as, const VerifySource& input,
                        Progress& progress) {
  ByteSpan bytes = where.bytes;
  uint32_t crc = 0;
  if (input.reread != nullptr && where.file != nullptr &&
      input.reread->crc32(where.file_offset, bytes.size) == expected) {
    crc = expected;
  } else if (bytes.size < k_read_from) {
    crc = crc32_update(0, bytes.data, bytes.size);
  } else {
    StorageFile from{where.file->fd(), where.file_offset, shown_as, true};
    crc = read_storage(from, bytes.size, nullptr).written_crc32;
  }
  progress.done(bytes.size);
  return crc;
}

// Compares `source` and `written` (storages of one size): read from their
// files side by side (see above), or in place when small or when the source
// is not in a file (`source_file.fd` < 0). Sums the written bytes on the way,
// so that they are read once. `progress`, when set, hears of the bytes done.
Comparison compare_with_source(const StorageFile& source_file, ByteSpan source,
                               const StorageFile& written_file, ByteSpan written,
                               Progress* progress) {
  Comparison result;
  if (source_file.pieced == nullptr && (source.size < k_read_from || source_file.fd < 0)) {
    for (uint64_t at = 0; at < source.size; at += k_chunk) {
      uint64_t n = std::min(k_chunk, source.size - at);
      if (std::memcmp(source.data + at, written.data + at, n) != 0) {
        result.first_difference = at;
        return result;
      }
      result.written_crc32 = crc32_update(result.written_crc32, written.data + at, n);
      release_pages({source.data + at, n});
      release_pages({written.data + at, n});
    }
  } else {
    result = read_storage(written_file, source.size, &source_file);
    if (result.first_difference) {
      return result;
    }
  }
  if (progress != nullptr) {
    progress->done(source.size);
  }
  return result;
}

// Checks that `written` holds the bytes of `source` and the CRC-32 its record
// carries. A zip input's record carries the CRC-32 torch computed when it
// saved them, and the written record the same one: then reading the output
// once proves both (a CRC-32 catches every burst of up to 32 flipped bits,
// and all but one in four billion other damage). So does a source the
// writer read from records whose CRC-32s are checked after (a ZeRO rank's
// partitions, VerifySource::proven): what it read has the CRC-32 its reads
// join to, which the output must have. Only when that fails, or the input
// has no CRC-32 (legacy format, DCP), are the bytes compared with the
// source, which also tells whose bytes are damaged.
void check_storage(const std::string& shown_as, const VerifySource& input,
                   const Storage& source, const Storage& written, Progress& progress) {
  StorageBytes from = storage_bytes(source);
  StorageBytes to = storage_bytes(written);
  const ByteSpan& a = from.bytes;
  const ByteSpan& b = to.bytes;
  std::string name = "data/" + written.key;
  if (a.size != b.size) {
    mismatch(shown_as, name + " holds " + std::to_string(b.size) + " bytes, its source " +
                           std::to_string(a.size));
  }
  bool same_crc_as_input = source.has_crc32 && written.has_crc32 && written.crc32 == source.crc32;
  std::optional<uint32_t> as_read;
  if (!source.has_crc32 && input.proven != nullptr && written.has_crc32) {
    as_read = crc32_from_reads(source, *input.proven);
  }
  bool by_crc = same_crc_as_input || as_read == written.crc32;
  if (by_crc && crc32_streamed(to, written.crc32, shown_as, input, progress) == written.crc32) {
    return;
  }
  StorageFile source_file = source_file_of(source, from, input);
  StorageFile written_file{to.file->fd(), to.file_offset, shown_as, true};
  // After a failed CRC-32 the bytes were counted already.
  Comparison compared =
      compare_with_source(source_file, a, written_file, b, by_crc ? nullptr : &progress);
  if (compared.first_difference) {
    mismatch(shown_as, name + " differs from its source near byte " +
                           std::to_string(*compared.first_difference));
  }
  if (same_crc_as_input) {
    // The bytes equal the input's, which fail the CRC-32 of the input record.
    input_record_damaged(input, source);
  }
  if (!written.has_crc32 || compared.written_crc32 != written.crc32) {
    mismatch(shown_as, name + ": the CRC-32 in the archive does not match its bytes");
  }
}

// Checks that `written` holds `source`'s elements (in dtype `from`) cast to
// its dtype, compared with the reference cast, and the CRC-32 its record
// carries; and that the source's bytes, read whole, match the CRC-32 of their
// input record when it has one (else a damaged input would be cast on). A
// cast the writer checked (cast_checked_as_written) needs only the CRC-32 of
// its output, reread.
void check_cast_storage(const std::string& shown_as, const VerifySource& input, Dtype from,
                        const Storage& source, const Storage& written, Progress& progress) {
  StorageBytes in = storage_bytes(source);
  StorageBytes out = storage_bytes(written);
  uint64_t in_size = static_cast<uint64_t>(element_size(from));
  uint64_t out_size = static_cast<uint64_t>(element_size(written.dtype));
  uint64_t count = static_cast<uint64_t>(source.numel);
  std::string name = "data/" + written.key;
  if (out.bytes.size != count * out_size) {
    mismatch(shown_as, name + " holds " + std::to_string(out.bytes.size) +
                           " bytes, its source cast " + std::to_string(count * out_size));
  }
  if (cast_checked_as_written(input, source) && written.has_crc32) {
    if (crc32_streamed(out, written.crc32, shown_as, input, progress) == written.crc32) {
      return;
    }
    // Compared with the source below, to say where they differ.
  }
  StorageFile source_file = source_file_of(source, in, input);
  StorageFile written_file{out.file->fd(), out.file_offset, shown_as, true};
  // Read into buffers (pread; in place when the source is only in memory), in
  // two halves on two threads from 1 Mi elements, as read_storage reads.
  const uint64_t step = k_buffer / std::max(in_size, out_size);
  uint64_t first[2] = {UINT64_MAX, UINT64_MAX};
  uint32_t sums[2] = {0, 0};
  uint32_t source_sums[2] = {0, 0};
  ReadLog logs[2];
  uint64_t half = in_two_halves(count, [&](uint64_t begin, uint64_t end) {
    int which = begin == 0 ? 0 : 1;
    std::vector<uint8_t> a(step * in_size);
    std::vector<uint8_t> b(step * out_size);
    for (uint64_t at = begin; at < end; at += step) {
      uint64_t n = std::min(step, end - at);
      const uint8_t* from_bytes = in.bytes.data + at * in_size;
      if (source_file.readable()) {
        read_chunk(source_file, a.data(), n * in_size, at * in_size,
                   source_file.reads != nullptr ? &logs[which] : nullptr);
        from_bytes = a.data();
      }
      read_chunk(written_file, b.data(), n * out_size, at * out_size);
      size_t differs = first_cast_difference(from, written.dtype, from_bytes, b.data(), n);
      if (differs < n) {
        first[which] = at + differs;
        return;
      }
      sums[which] = crc32_update(sums[which], b.data(), n * out_size);
      if (source.has_crc32) {
        source_sums[which] = crc32_update(source_sums[which], from_bytes, n * in_size);
      }
    }
  });
  if (std::min(first[0], first[1]) != UINT64_MAX) {
    mismatch(shown_as, name + " is not its source cast to " +
                           std::string(dtype_name(written.dtype)) + " at element " +
                           std::to_string(std::min(first[0], first[1])));
  }
  if (source_file.reads != nullptr) {
    for (const ReadLog& log : logs) {
      source_file.reads->insert(source_file.reads->end(), log.begin(), log.end());
    }
  }
  if (source.has_crc32 &&
      crc32_combine(source_sums[0], source_sums[1], (count - half) * in_size) != source.crc32) {
    input_record_damaged(input, source);
  }
  uint32_t crc = crc32_combine(sums[0], sums[1], (count - half) * out_size);
  progress.done(count * out_size);
  if (!written.has_crc32 || crc != written.crc32) {
    mismatch(shown_as, name + ": the CRC-32 in the archive does not match its bytes");
  }
}

}  // namespace

void verification_failed(const std::string& path, const std::string& what) {
  throw Error(path + ": verification failed: " + what, ExitStatus::k_verify_failed);
}

CastCheck reference_cast_check() {
  CastCheck check;
  check.differs = first_cast_difference;
  return check;
}

bool cast_checked_as_written(const VerifySource& input, const Storage& source) {
  const CastCheck* checked = input.checked;
  if (checked == nullptr) {
    return false;
  }
  auto noted = checked->source_crc32s.find(&source);
  if (noted == checked->source_crc32s.end()) {
    return false;
  }
  if (source.has_crc32) {
    if (noted->second != source.crc32) {
      input_record_damaged(input, source);
    }
    return true;
  }
  return input.proven != nullptr && crc32_from_reads(source, *input.proven) == noted->second;
}

void input_record_damaged(const VerifySource& input, const Storage& source) {
  throw Error(input.records + source.key + ": CRC-32 mismatch: the tensor data is corrupt "
              "(the file was damaged after it was saved)");
}

VerifyReport verify_output(const std::vector<TensorRef>& sources, const std::string& pickle,
                           const std::string& path, const std::string& shown_as,
                           const std::string& device, const VerifySource& input,
                           const ProgressFn& progress, const StorageCasts& casts) {
  VerifyReport report;
  report.device = device;
  bool on_cpu = is_cpu_device(device);
  Checkpoint written;
  try {
    written = read_checkpoint(path);
  } catch (const Error& e) {
    mismatch(shown_as, std::string("cannot reread the output: ") + e.what());
  }

  if (encode_pickle(written.graph.root, 1000, UINT64_MAX, pickle.size()).bytes != pickle) {
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
  source_to_output.reserve(written.graph.storages().size());
  output_to_source.reserve(written.graph.storages().size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const TensorRef& src = sources[i];
    const TensorRef& out = outputs[i];
    auto cast = casts.find(src.storage);
    bool is_cast = cast != casts.end();
    // A cast storage's dtype is the one written; `src.dtype` its input's.
    Dtype expected = is_cast ? src.storage->dtype : src.dtype;
    if (expected != out.dtype || src.sizes != out.sizes || src.strides != out.strides ||
        src.offset != out.offset || src.requires_grad != out.requires_grad ||
        src.parameter != out.parameter) {
      mismatch(shown_as, describe(i, src) + " differs in dtype, size, stride or offset");
    }
    auto [to_out, new_pair] = source_to_output.emplace(src.storage, out.storage);
    auto [to_src, new_back] = output_to_source.emplace(out.storage, src.storage);
    if (to_out->second != out.storage || to_src->second != src.storage) {
      mismatch(shown_as, describe(i, src) + " does not share storage as its source does");
    }
    if (new_pair && is_cast) {
      check_cast_storage(shown_as, input, cast->second, *src.storage, *out.storage, verified);
      ++report.storages;
      report.bytes += out.storage->bytes.size;
    } else if (new_pair) {
      check_storage(shown_as, input, *src.storage, *out.storage, verified);
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
    std::string why = round_trip(device, out, is_cast ? out : src);
    if (!why.empty()) {
      mismatch(shown_as, describe(i, src) + " " + why);
    }
    ++report.device_checked;
  }
  return report;
}

}  // namespace ckpt
