// The safetensors writer (safetensors_writer.h): names planned from a state
// dict, and files written as `safetensors.torch.save_file(sd, metadata={
// "format": "pt"})` lays them out, byte for byte (the header by the codec,
// safetensors_codec.h; each tensor's elements row-major after it).
//
// What differs from the reference, on purpose:
// - Views and non-contiguous tensors are written contiguous (save_file
//   refuses them), through a bounded buffer (TensorBytes).
// - Names whose bytes overlap (a tied LM head and embedding), which save_file
//   refuses with "Some tensors share memory": by default each is written with
//   its own copy, so that `load_state_dict(strict=True)` works on the plain
//   model; `--tied dedupe` keeps one name per group as `save_model` chooses it
//   and records `removed: kept` in `__metadata__`, which our reader (and
//   text-generation-inference) turn back into shared storage. Only an
//   identical view becomes an alias (the reader restores it as the same view
//   of the kept bytes); where no name spans the storage (tied names inside a
//   flat buffer), where save_model refuses, the smallest name is kept.
// Disjoint views of one storage (FSDP and DeepSpeed flat buffers) are not
// tied: each is written as the tensor it is.
//
// Verification rereads the file through the reader table: the header must be
// the one laid out, every name must be there (a deduplicated one as a view
// of its kept twin), and every tensor's bytes must equal its source's, cast
// again on the portable path, streamed side by side. A tensor that is the
// whole of a zip input's record (the usual state dict) is proven, as a .pth
// output's storage is (verify.cc), by the CRC-32 torch computed when it saved
// the bytes: a copy by reading only what was written; a cast by summing the
// source as it is read. Either way a damaged input is refused, not carried on.
#include "formats/safetensors_writer.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <unistd.h>

#include "ckpt/cast.h"
#include "ckpt/checkpoint.h"
#include "ckpt/crc32.h"
#include "ckpt/error.h"
#include "ckpt/mapped_file.h"
#include "ckpt/source.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor_bytes.h"
#include "ckpt/torch_plugin.h"
#include "util/helper_thread.h"
#include "util/two_halves.h"
#include "verify/reference_cast.h"

namespace ckpt {
namespace {

constexpr uint64_t k_chunk = uint64_t{1} << 20;

// Byte ranges of one storage, [begin, end): what `_filter_shared_not_shared`
// compares to tell tied names from disjoint views.
struct Extent {
  uint64_t begin;
  uint64_t end;
  size_t entry;
};

// The groups of entries whose bytes overlap (two or more names each), in
// state-dict order of their first name.
std::vector<std::vector<size_t>> overlapping_groups(const std::vector<NamedTensor>& entries) {
  std::unordered_map<const Storage*, std::vector<Extent>> by_storage;
  std::vector<const Storage*> order;
  for (size_t i = 0; i < entries.size(); ++i) {
    const TensorRef& t = entries[i].tensor;
    uint64_t begin = static_cast<uint64_t>(t.offset) * static_cast<uint64_t>(element_size(t.dtype));
    uint64_t end = std::max(begin, t.byte_extent());
    auto [it, added] = by_storage.try_emplace(t.storage);
    if (added) {
      order.push_back(t.storage);
    }
    it->second.push_back({begin, end, i});
  }
  std::vector<std::vector<size_t>> groups;
  for (const Storage* storage : order) {
    std::vector<Extent>& extents = by_storage[storage];
    if (extents.size() < 2) {
      continue;
    }
    std::stable_sort(extents.begin(), extents.end(),
                     [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
    std::vector<size_t> cluster;
    uint64_t stop = 0;
    auto close = [&] {
      if (cluster.size() > 1) {
        std::sort(cluster.begin(), cluster.end());
        groups.push_back(cluster);
      }
      cluster.clear();
    };
    for (const Extent& e : extents) {
      if (!cluster.empty() && e.begin >= stop) {
        close();
      }
      if (e.begin == e.end) {  // an empty tensor shares nothing
        continue;
      }
      cluster.push_back(e.entry);
      stop = std::max(stop, e.end);
    }
    close();
  }
  std::sort(groups.begin(), groups.end());
  return groups;
}

// `_is_complete`: the tensor starts at its storage's start and spans all of it.
bool covers_storage(const TensorRef& t) {
  return t.offset == 0 && static_cast<uint64_t>(t.numel()) * element_size(t.dtype) ==
                              t.storage->bytes.size;
}

// The state dict's names and tensors; refuses what safetensors cannot hold.
std::vector<NamedTensor> collect(const WriteRequest& request) {
  std::vector<NamedTensor> entries;
  const Node* root = request.root;
  if (root == nullptr || root->kind != NodeKind::k_dict) {
    throw FormatError("safetensors holds a state dict (names to tensors); this is no dict");
  }
  std::set<std::string> seen;
  for (const NodeEntry& item : root->entries) {
    if (!item.first->is_str()) {
      throw FormatError("safetensors names tensors by strings; a key of the state dict is "
                        "not one");
    }
    std::string name = item.first->text.str();
    std::optional<TensorRef> tensor = as_tensor(item.second);
    if (!tensor) {
      throw FormatError("'" + name + "' is not a tensor: safetensors holds tensors only "
                        "(--drop it, or write .pth)");
    }
    if (tensor->quantized) {
      throw FormatError("'" + name + "' is a quantized tensor, which safetensors cannot hold");
    }
    Dtype dtype = written_dtype(request.options, name, tensor->dtype);
    if (!safetensors_dtype_name(dtype)) {
      throw FormatError("'" + name + "' is " + std::string(dtype_name(dtype)) +
                        ", which safetensors has no dtype for");
    }
    if (!seen.insert(name).second) {
      throw FormatError("'" + name + "' appears twice in the state dict");
    }
    entries.push_back({std::move(name), *tensor, dtype, true, ""});
  }
  return entries;
}

// The name of `group` that `--tied dedupe` writes: the one `--keep-tied`
// names, else the one `save_model` keeps (the smallest name that spans its
// storage), else (where save_model refuses: the names share part of a flat
// buffer) the smallest name. Adds the `--keep-tied` name used to `used`.
size_t keep_of(const std::vector<NamedTensor>& entries, const std::vector<size_t>& group,
               const std::set<std::string>& preferred, std::set<std::string>& used) {
  std::vector<SharedName> names;
  bool any_complete = false;
  std::optional<size_t> asked;
  for (size_t i : group) {
    bool complete = covers_storage(entries[i].tensor);
    names.push_back({entries[i].name, complete});
    any_complete = any_complete || complete;
    if (preferred.count(entries[i].name) != 0) {
      if (asked) {
        throw Error("--keep-tied " + entries[*asked].name + " and --keep-tied " +
                    entries[i].name + ": one tied group, one name to keep",
                    ExitStatus::k_usage);
      }
      asked = i;
      used.insert(entries[i].name);
    }
  }
  if (asked) {
    return *asked;
  }
  std::string kept;
  if (any_complete) {
    kept = choose_kept_name(names).kept;
  } else {
    kept = std::min_element(names.begin(), names.end(), [](const SharedName& a,
                                                           const SharedName& b) {
             return a.name < b.name;
           })->name;
  }
  for (size_t i : group) {
    if (entries[i].name == kept) {
      return i;
    }
  }
  return group.front();
}

bool same_view(const TensorRef& a, const TensorRef& b) {
  return a.storage == b.storage && a.dtype == b.dtype && a.offset == b.offset &&
         a.sizes == b.sizes && a.strides == b.strides;
}

// Finds the names whose bytes overlap; with `--tied dedupe` keeps one of
// each group and marks the identical views of it as its aliases.
std::vector<TiedNames> plan_tied(const WriteRequest& request,
                                 std::vector<NamedTensor>& entries) {
  std::vector<TiedNames> tied_groups;
  const SinkOptions& options = request.options;
  std::set<std::string> preferred(options.keep_tied.begin(), options.keep_tied.end());
  std::set<std::string> used;
  for (const std::vector<size_t>& group : overlapping_groups(entries)) {
    TiedNames tied;
    if (options.tied == TiedPolicy::k_copy) {
      tied.kept = entries[group[0]].name;
      for (size_t i = 1; i < group.size(); ++i) {
        tied.aliases.push_back(entries[group[i]].name);
      }
      tied_groups.push_back(std::move(tied));
      continue;
    }
    NamedTensor& kept = entries[keep_of(entries, group, preferred, used)];
    for (size_t i : group) {
      NamedTensor& e = entries[i];
      // Only an identical view can stand for another: the reader makes the
      // alias the same view of the kept name's bytes. Other overlapping
      // names are written with their own.
      if (&e != &kept && same_view(e.tensor, kept.tensor)) {
        e.written = false;
        e.kept = kept.name;
        tied.aliases.push_back(e.name);
      }
    }
    if (tied.aliases.empty()) {
      continue;
    }
    tied.kept = kept.name;
    tied.deduplicated = true;
    tied_groups.push_back(std::move(tied));
  }
  for (const std::string& name : preferred) {
    if (used.count(name) == 0) {
      throw Error("--keep-tied " + name + ": no tied tensor has this name" +
                  (options.tied == TiedPolicy::k_dedupe ? "" : " (and --keep-tied needs "
                  "--tied dedupe)"), ExitStatus::k_usage);
    }
  }
  return tied_groups;
}

// Writes the elements of `e`, one range of its storage (`source`), cast to its
// written dtype at the position of `fd` (`start`), as the zip writer makes a
// cast record: in two halves on two threads from 1 Mi elements, each reading (pread),
// casting, checking and summing when `checking`, and writing (pwrite) its
// own. Leaves `fd` at the end; returns the bytes written.
uint64_t write_cast_in_halves(const NamedTensor& e, const TensorBytes& source, int fd,
                              uint64_t start, const std::string& shown_as, CastCheck* check,
                              bool checking) {
  const Storage& storage = *e.tensor.storage;
  const Dtype from = e.tensor.dtype;
  const Dtype to = e.written_dtype;
  const uint64_t in_size = static_cast<uint64_t>(element_size(from));
  const uint64_t out_size = static_cast<uint64_t>(element_size(to));
  const uint64_t count = source.size() / in_size;
  uint64_t first_difference[2] = {UINT64_MAX, UINT64_MAX};
  uint32_t source_sums[2] = {0, 0};
  uint32_t written_sums[2] = {0, 0};
  uint64_t half = in_two_halves(count, [&](uint64_t begin, uint64_t end) {
    const int which = begin == 0 ? 0 : 1;
    const uint64_t step = k_chunk / std::max(in_size, out_size);
    std::vector<uint8_t> in(std::min(step, end - begin) * in_size);
    std::vector<uint8_t> out(std::min(step, end - begin) * out_size);
    for (uint64_t at = begin; at < end; at += step) {
      uint64_t n = std::min(step, end - at);
      read_storage_range(storage, source.storage_start() + at * in_size, in.data(), n * in_size);
      cast_elements(from, to, in.data(), out.data(), n);
      if (checking) {
        size_t differs = check->differs(from, to, in.data(), out.data(), n);
        if (differs < n) {
          first_difference[which] = at + differs;
          return;
        }
        source_sums[which] = crc32_update(source_sums[which], in.data(), n * in_size);
        written_sums[which] = crc32_update(written_sums[which], out.data(), n * out_size);
      }
      write_all_at(fd, out.data(), n * out_size, start + at * out_size, shown_as);
    }
  });
  uint64_t differs = std::min(first_difference[0], first_difference[1]);
  if (differs != UINT64_MAX) {
    verification_failed(shown_as, "'" + e.name + "' differs from its source near byte " +
                                      std::to_string(differs * out_size));
  }
  if (::lseek(fd, static_cast<off_t>(start + count * out_size), SEEK_SET) < 0) {
    throw Error(shown_as + ": cannot write: " + std::strerror(errno));
  }
  if (checking) {
    check->source_crc32s[&storage] =
        crc32_combine(source_sums[0], source_sums[1], (count - half) * in_size);
    check->written_crc32s[&storage] =
        crc32_combine(written_sums[0], written_sums[1], (count - half) * out_size);
  }
  return count * out_size;
}

// Writes `e`'s elements, cast to its written dtype; returns the bytes written.
// With `check`, a cast of a whole zip record is checked as it is written and
// the CRC-32s of its source and of what was written are noted (CastCheck):
// verification then rereads only the output. (A sink writes into a temporary
// file; were `fd` a pipe, casts would go in order below, unchecked, and
// verification would compare them with their source instead.)
uint64_t write_tensor(const NamedTensor& e, int fd, std::vector<uint8_t>& in,
                      std::vector<uint8_t>& out, const std::string& shown_as,
                      CastCheck* check, CopyThreads threads) {
  TensorBytes source(e.tensor);
  const Storage& storage = *e.tensor.storage;
  bool cast = e.written_dtype != e.tensor.dtype;
  if (cast && source.is_one_range()) {
    off_t start = ::lseek(fd, 0, SEEK_CUR);
    if (start >= 0) {
      bool checking = check != nullptr && storage.has_crc32 && covers_storage(e.tensor);
      return write_cast_in_halves(e, source, fd, static_cast<uint64_t>(start), shown_as, check,
                                  checking);
    }
  }
  uint64_t copied = 0;
  if (!cast && source.is_one_range() && (storage.file != nullptr || has_pieces(storage)) &&
      source.size() > k_chunk) {
    copied = copy_storage_range(storage, source.storage_start(), source.size(), fd, threads);
    if (copied == source.size()) {
      return copied;
    }
    // Not supported here: the rest goes through the buffer.
    uint64_t skipped = 0;
    while (skipped < copied) {
      skipped += source.read(in.data(), std::min<uint64_t>(in.size(), copied - skipped));
    }
  }
  uint64_t written = copied;
  size_t from = static_cast<size_t>(element_size(e.tensor.dtype));
  size_t to = static_cast<size_t>(element_size(e.written_dtype));
  out.resize(in.size() / from * to);
  while (uint64_t n = source.read(in.data(), in.size())) {
    if (cast) {
      cast_elements(e.tensor.dtype, e.written_dtype, in.data(), out.data(), n / from);
      write_all(fd, out.data(), n / from * to, shown_as);
      written += n / from * to;
    } else {
      write_all(fd, in.data(), n, shown_as);
      written += n;
    }
  }
  return written;
}

// The CRC-32 of the bytes `bytes` reads from where it stands, a buffer at a time.
uint32_t crc32_of_rest(TensorBytes& bytes, std::vector<uint8_t>& buffer, uint64_t& size) {
  uint32_t crc = 0;
  while (uint64_t n = bytes.read(buffer.data(), buffer.size())) {
    crc = crc32_update(crc, buffer.data(), n);
    size += n;
  }
  return crc;
}

// The CRC-32 of `out`'s bytes as read back, and their count in `size`: read
// here, or `expected` when the output was reread behind the writer
// (input.reread) and that found it for exactly their range. Any other sum the
// reread noted is not taken: the bytes are read again, so that a difference
// is judged by the file as it is now.
uint32_t crc32_read_back(const TensorRef& out, uint32_t expected, std::vector<uint8_t>& buffer,
                         uint64_t& size, const VerifySource& input) {
  TensorBytes bytes(out);
  StorageBytes where = storage_bytes(*out.storage);
  if (input.reread != nullptr && where.file != nullptr && bytes.is_one_range() &&
      input.reread->crc32(where.file_offset + bytes.storage_start(), bytes.size()) ==
          expected) {
    size = bytes.size();
    return expected;
  }
  return crc32_of_rest(bytes, buffer, size);
}

// Streams `out`'s bytes (as read back) beside `e`'s source, cast as the
// writer cast it; returns the bytes compared. See the top of the file for
// sources that are a whole zip record (their CRC-32 known).
uint64_t compare(const NamedTensor& e, const TensorRef& out, std::vector<uint8_t>& a,
                 std::vector<uint8_t>& b, const std::string& shown_as, const VerifySource& input,
                 ReadLog* reads) {
  TensorBytes source(e.tensor);
  source.log_reads(reads);
  Dtype from = e.tensor.dtype;
  Dtype to = e.written_dtype;
  const Storage& storage = *e.tensor.storage;
  bool whole_record = storage.has_crc32 && covers_storage(e.tensor) && source.is_one_range();
  if (whole_record && from != to && cast_checked_as_written(input, storage)) {
    // Cast and checked as written (write_cast_in_halves), from its record's
    // bytes: what was written must read back.
    auto written_sum = input.checked->written_crc32s.find(&storage);
    if (written_sum != input.checked->written_crc32s.end()) {
      uint64_t size = 0;
      uint64_t expected = source.size() / element_size(from) * element_size(to);
      if (crc32_read_back(out, written_sum->second, b, size, input) == written_sum->second &&
          size == expected) {
        return size;
      }
      // Compared below, to say where they differ.
    }
  }
  if (whole_record && from == to) {
    uint64_t size = 0;
    if (crc32_read_back(out, storage.crc32, b, size, input) == storage.crc32 &&
        size == source.size()) {
      return size;
    }
    // Compared below, to tell whose bytes are damaged.
  }
  TensorBytes written(out);
  uint32_t source_crc = 0;
  size_t from_size = static_cast<size_t>(element_size(from));
  size_t to_size = static_cast<size_t>(element_size(to));
  // Read the source in pieces whose cast fills at most one buffer.
  uint64_t piece = to_size > from_size ? a.size() / to_size * from_size : a.size();
  uint64_t done = 0;
  while (uint64_t n = source.read(a.data(), piece)) {
    if (whole_record) {
      source_crc = crc32_update(source_crc, a.data(), n);
    }
    uint64_t count = n / from_size;
    uint64_t size = count * to_size;
    uint64_t got = 0;
    while (got < size) {
      uint64_t m = written.read(b.data() + got, size - got);
      if (m == 0) {
        verification_failed(shown_as, "'" + e.name + "' holds fewer bytes than its source");
      }
      got += m;
    }
    // Cast again by the reference (reference_cast.h), not by the writer's code.
    uint64_t first = 0;
    bool same = from == to ? std::memcmp(a.data(), b.data(), size) == 0
                           : (first = first_cast_difference(from, to, a.data(), b.data(), count)) == count;
    if (!same) {
      verification_failed(shown_as, "'" + e.name + "' differs from its source near byte " +
                                        std::to_string(done + first * to_size));
    }
    done += size;
  }
  if (done != written.size()) {
    verification_failed(shown_as, "'" + e.name + "' holds more bytes than its source");
  }
  if (whole_record && source_crc != storage.crc32) {
    input_record_damaged(input, storage);
  }
  return done;
}

}  // namespace

StateDictPlan plan_state_dict(const WriteRequest& request) {
  StateDictPlan plan;
  plan.entries = collect(request);
  plan.tied = plan_tied(request, plan.entries);
  return plan;
}

SafetensorsFile::SafetensorsFile(std::vector<NamedTensor> entries) : m_entries(std::move(entries)) {
  std::map<std::string, std::string> metadata{{"format", "pt"}};
  std::vector<SafetensorsEntry> header;
  for (size_t i = 0; i < m_entries.size(); ++i) {
    const NamedTensor& e = m_entries[i];
    if (!e.written) {
      add_removed_names(metadata, KeptName{e.kept, {e.name}});
      continue;
    }
    SafetensorsEntry out;
    out.name = e.name;
    out.dtype = e.written_dtype;
    for (int64_t size : e.tensor.sizes) {
      out.shape.push_back(static_cast<uint64_t>(size));
    }
    header.push_back(std::move(out));
    m_header_entry.push_back(i);
  }
  m_layout = serialize_safetensors_header(header, metadata);
}

void SafetensorsFile::write(int fd, const std::string& shown_as, const ProgressFn& progress,
                            uint64_t done, uint64_t total, CastCheck* check,
                            RereadBehind* reread) const {
  write_all(fd, m_layout.header.data(), m_layout.header.size(), shown_as);
  done += m_layout.header.size();
  std::vector<uint8_t> in(k_chunk);
  std::vector<uint8_t> out;
  const uint64_t data_start = m_layout.header.size();
  const CopyThreads threads = copy_threads_beside(reread);
  for (size_t i = 0; i < m_layout.tensors.size(); ++i) {
    done += write_tensor(m_entries[m_header_entry[m_layout.order[i]]], fd, in, out, shown_as,
                         check, threads);
    if (reread != nullptr) {
      const SafetensorsEntry& laid_out = m_layout.tensors[i];
      reread->written(fd, data_start + laid_out.begin, laid_out.end - laid_out.begin, shown_as);
    }
    if (progress) {
      progress("write", done, total);
    }
  }
}

uint64_t SafetensorsFile::compare_all(const std::vector<const TensorRef*>& outputs,
                                      const std::string& shown_as,
                                      const VerifySource& input) const {
  // Tensors are taken in turn by this thread and the helper (the machine's
  // cores allowing), each with its buffers: one core reads about 4 GB/s of
  // page cache.
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> bytes{0};
  // Each thread notes what it reads of the input apart (VerifySource::reads).
  ReadLog reads[2];
  auto work = [&](ReadLog& read) {
    std::vector<uint8_t> a(k_chunk);
    std::vector<uint8_t> b(k_chunk);
    for (size_t i = next++; i < m_entries.size(); i = next++) {
      uint64_t compared = compare(m_entries[i], *outputs[i], a, b, shown_as, input,
                                  input.reads != nullptr ? &read : nullptr);
      if (m_entries[i].written) {
        bytes += compared;
      }
    }
  };
  std::exception_ptr failed;
  std::exception_ptr helper_failed;
  // Either stops the other at its next tensor when it fails.
  auto work_or_stop = [&](ReadLog& read, std::exception_ptr& error) {
    try {
      work(read);
    } catch (...) {
      error = std::current_exception();
      next = m_entries.size();
    }
  };
  if (std::thread::hardware_concurrency() >= 2 && m_entries.size() >= 2) {
    run_beside([&] { work_or_stop(reads[1], helper_failed); },
               [&] { work_or_stop(reads[0], failed); });
  } else {
    work_or_stop(reads[0], failed);
  }
  if (failed || helper_failed) {
    std::rethrow_exception(failed ? failed : helper_failed);
  }
  if (input.reads != nullptr) {
    for (const ReadLog& read : reads) {
      input.reads->insert(input.reads->end(), read.begin(), read.end());
    }
  }
  return bytes;
}

VerifyReport SafetensorsFile::verify(const std::string& path, const std::string& shown_as,
                                     const std::string& device,
                                     const VerifySource& input) const {
  Checkpoint back;
  try {
    back = read_checkpoint(path);
  } catch (const Error& e) {
    verification_failed(shown_as, std::string("cannot reread the output: ") + e.what());
  }
  if (back.format == nullptr || std::string(back.format->name) != "safetensors") {
    verification_failed(shown_as, "the output does not read back as safetensors");
  }
  const std::string& header = m_layout.header;
  if (back.bytes.size < header.size() ||
      std::memcmp(back.bytes.data, header.data(), header.size()) != 0) {
    verification_failed(shown_as, "the header read back differs from the one laid out");
  }
  std::unordered_map<std::string, TensorRef> reread;
  for (const NodeEntry& item : back.graph.root->entries) {
    reread.emplace(item.first->text.str(), *as_tensor(item.second));
  }
  if (reread.size() != m_entries.size()) {
    verification_failed(shown_as, std::to_string(reread.size()) + " names read back, " +
                           std::to_string(m_entries.size()) + " expected");
  }
  VerifyReport report;
  report.device = device;
  bool on_cpu = is_cpu_device(device);
  std::vector<const TensorRef*> outputs;
  for (const NamedTensor& e : m_entries) {
    auto found = reread.find(e.name);
    if (found == reread.end()) {
      verification_failed(shown_as, "'" + e.name + "' is missing");
    }
    const TensorRef& out = found->second;
    if (out.dtype != e.written_dtype || out.sizes != e.tensor.sizes) {
      verification_failed(shown_as, "'" + e.name + "' differs in dtype or shape");
    }
    if (!e.written && out.storage != reread.at(e.kept).storage) {
      verification_failed(shown_as,
                          "'" + e.name + "' does not read back as an alias of '" + e.kept + "'");
    }
    outputs.push_back(&out);
  }
  report.bytes = compare_all(outputs, shown_as, input);
  for (size_t i = 0; i < m_entries.size(); ++i) {
    const NamedTensor& e = m_entries[i];
    const TensorRef& out = *outputs[i];
    ++report.tensors;
    if (e.written) {
      ++report.storages;
    }
    if (on_cpu) {
      ++report.device_checked;
      continue;
    }
    if (out.byte_extent() == 0) {
      continue;
    }
    // Cast tensors were compared above; on the device they must load.
    std::string why = round_trip(device, out, e.written_dtype == e.tensor.dtype ? e.tensor : out);
    if (!why.empty()) {
      verification_failed(shown_as, "'" + e.name + "' " + why);
    }
    ++report.device_checked;
  }
  return report;
}

}  // namespace ckpt
