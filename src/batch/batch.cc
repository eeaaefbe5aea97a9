// This file runs a batch: the inputs of this shard, converted on a pool of
// threads, largest first, within one memory budget, each recorded as one
// line of a JSON Lines report and, once converted, in a sidecar under
// OUTDIR/.ckpt-convert/ that lets the next run skip it.
//
// Conversions are independent (each maps its own input and writes its own
// temporary file), so threads share nothing but the queue, the report and
// the counters, all under one mutex. A conversion's resident memory is at
// most about its input's size (tensor bytes stream from the page cache and
// are let go as they are copied and compared), so that size is what it is
// counted at against `--max-memory`.
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "batch_internal.h"
#include "ckpt/batch.h"
#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "ckpt/shard_plan.h"
#include "ckpt/sink.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

unsigned available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    return std::max(1, CPU_COUNT(&set));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

uint64_t half_the_memory() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) {
    return uint64_t{4} << 30;
  }
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 2;
}

std::string join(const std::string& folder, const std::string& relative) {
  return (fs::path(folder) / relative).string();
}

// An input whose conversion was tried and failed keeps no output of an
// earlier run (other options, other bytes): a later loop over the tree would
// take it for this run's. Only OUTDIR/<relative> and its sidecar are
// removed (a folder output: the shards and index in it, then the folder if
// that empties it), never the input itself (an output that is the input, or
// a path that would leave OUTDIR, is left alone); a dry run only says so.
void drop_stale_output(const BatchInput& in, const BatchOptions& options, BatchRecord& record) {
  fs::path relative(in.relative);
  if (relative.empty() || relative.is_absolute() ||
      std::find(relative.begin(), relative.end(), "..") != relative.end()) {
    return;
  }
  struct stat out_info {};
  struct stat in_info {};
  bool folder = ::lstat(record.output.c_str(), &out_info) == 0 && S_ISDIR(out_info.st_mode);
  if (!folder && (::lstat(record.output.c_str(), &out_info) != 0 ||
                  !(S_ISREG(out_info.st_mode) || S_ISLNK(out_info.st_mode)))) {
    return;
  }
  if (::lstat(in.input.c_str(), &in_info) == 0 && in_info.st_dev == out_info.st_dev &&
      in_info.st_ino == out_info.st_ino) {
    return;
  }
  std::vector<std::string> shards;
  if (folder) {
    shards = stale_shard_files(record.output, ShardFormat::k_safetensors);
    if (shards.empty()) {
      return;  // no output of ours
    }
  }
  if (options.convert.dry_run) {
    record.stale_output = "would be removed";
    return;
  }
  for (const std::string& shard : shards) {
    std::string path = join(record.output, shard);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      record.error += "\n" + path + ": cannot remove the output of an earlier run: " +
                      std::strerror(errno);
      return;
    }
  }
  if (folder) {
    ::rmdir(record.output.c_str());  // kept when something else is in it
  } else if (::unlink(record.output.c_str()) != 0) {
    record.error += "\n" + record.output + ": cannot remove the output of an earlier run: " +
                    std::strerror(errno);
    return;
  }
  batch_detail::remove_sidecars(batch_detail::sidecar_paths(options.output_dir, in.relative));
  record.stale_output = "removed";
}

// Removes the folders between `output` and `output_dir` that are empty: a
// failed input must not leave the folder made for its output behind (rmdir
// removes only empty ones, so another input's output keeps its folder).
void remove_empty_folders(const std::string& output_dir, const std::string& output) {
  fs::path top = fs::path(output_dir).lexically_normal();
  for (fs::path folder = fs::path(output).parent_path().lexically_normal();
       folder != top && !folder.empty() && folder.string().size() > top.string().size();
       folder = folder.parent_path()) {
    if (::rmdir(folder.c_str()) != 0) {
      break;
    }
  }
}

// Converts one input (or finds it up to date). Never throws: a failure is
// the record's.
BatchRecord process(const BatchInput& in, const BatchOptions& options,
                    const std::string& fingerprint, const BatchNaming& naming,
                    const std::string& output_format) {
  Clock::time_point start = Clock::now();
  BatchRecord record;
  record.input = in.input;
  record.relative = in.relative;
  record.output = join(options.output_dir, in.relative);
  record.input_bytes = in.size;
  record.output_format = output_format;
  if (options.convert.sink.dtype) {
    record.dtype = dtype_name(*options.convert.sink.dtype);
  }
  batch_detail::SidecarPaths sidecars = batch_detail::sidecar_paths(options.output_dir, in.relative);
  bool converting = false;  // a failure of convert() itself leaves no output
  try {
    if (!in.error.empty()) {
      throw Error(in.error);
    }
    if (!in.relative.empty() && *fs::path(in.relative).begin() == k_records_folder) {
      throw Error(in.input + ": its output " + record.output + " would be among the sidecars (" +
                  k_records_folder + "/); list it under another path", ExitStatus::k_usage);
    }
    std::optional<std::string> why = "forced (--force)";
    if (!options.convert.force) {
      why = batch_detail::check_up_to_date(in.input, in.folder, record.output, sidecars,
                                           fingerprint, options.convert.dry_run, record);
    }
    if (!why) {
      record.status = BatchStatus::k_skipped;
      record.reason = "up to date";
      record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      return record;
    }
    record.reason = *why;
    converting = in.folder;  // a folder whose index does not read fails as its conversion would
    std::vector<batch_detail::InputPart> parts = batch_detail::stamp_input(in.input, in.folder);
    converting = false;
    record.input_bytes = 0;
    for (const batch_detail::InputPart& part : parts) {
      record.input_bytes += part.stamp.size;
    }

    ConvertOptions convert_options = options.convert;
    convert_options.input = in.input;
    convert_options.output = record.output;
    if (!naming.sharded) {
      convert_options.format = naming.format;  // not chosen by OUT's name: it was named after it
    }
    convert_options.force = true;  // an output without a valid sidecar is redone
    convert_options.progress = nullptr;
    if (!convert_options.dry_run) {
      std::error_code ec;
      fs::create_directories(fs::path(record.output).parent_path(), ec);
      if (ec) {
        throw Error(record.output + ": cannot create its folder: " + ec.message());
      }
      batch_detail::remove_sidecars(sidecars);  // stale until the new one is written
    }
    ConvertReport report;
    converting = true;
    convert(convert_options, report);
    converting = false;
    record.tensors = report.tensors;
    record.storages = report.storages;
    record.storage_bytes = report.storage_bytes;
    record.renamed = report.rewrite.renamed;
    record.dropped = report.rewrite.dropped;
    for (size_t i = 0; i < report.rules.size(); ++i) {
      size_t matches = i < report.rewrite.rule_matches.size() ? report.rewrite.rule_matches[i] : 0;
      record.rules.push_back({report.rules[i].describe(), report.rules[i].origin, matches});
    }
    record.warnings = report.warnings;  // on_record says them, between status lines
    if (convert_options.dry_run) {
      record.status = BatchStatus::k_dry_run;
      record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      return record;
    }
    record.output_bytes = report.bytes_written;
    record.shards = report.shards;
    record.verified_on = report.verified ? report.verified->device : "";
    batch_detail::crc_input(in.input, parts);
    record.status = BatchStatus::k_converted;
    record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    batch_detail::write_sidecar(sidecars.current, record.output, parts, in.folder, fingerprint,
                                options.tool_version, record);
  } catch (const Error& e) {
    record.status = BatchStatus::k_failed;
    record.exit_code = static_cast<int>(e.status());
    record.error = e.what();
  } catch (const std::bad_alloc&) {
    record.status = BatchStatus::k_failed;
    record.exit_code = static_cast<int>(ExitStatus::k_bad_input);
    record.error = in.input + ": out of memory";
  } catch (const std::exception& e) {
    record.status = BatchStatus::k_failed;
    record.exit_code = static_cast<int>(ExitStatus::k_bad_input);
    record.error = in.input + ": internal error: " + e.what();
  }
  if (converting && record.status == BatchStatus::k_failed) {
    drop_stale_output(in, options, record);
    if (!options.convert.dry_run) {
      ::rmdir(record.output.c_str());  // a folder output made for this one, left empty
      remove_empty_folders(options.output_dir, record.output);
    }
  }
  record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return record;
}

// The queue: inputs largest first, started while they fit the budget.
class Queue {
public:
  Queue(std::vector<BatchInput> inputs, uint64_t budget)
      : m_pending(std::move(inputs)), m_budget(budget) {
    std::stable_sort(m_pending.begin(), m_pending.end(),
                     [](const BatchInput& a, const BatchInput& b) { return a.size > b.size; });
    for (const BatchInput& input : m_pending) {
      m_sizes.push_back(input.size);
    }
  }

  // The next input to convert, waiting until one fits; nothing when all
  // have been taken.
  std::optional<BatchInput> take() {
    std::unique_lock<std::mutex> lock(m_mutex);
    while (true) {
      if (m_sizes.empty()) {
        return std::nullopt;
      }
      std::optional<size_t> next = pick_next_input(m_sizes, m_in_flight, m_running, m_budget);
      if (next) {
        BatchInput input = std::move(m_pending[*next]);
        m_pending.erase(m_pending.begin() + static_cast<long>(*next));
        m_sizes.erase(m_sizes.begin() + static_cast<long>(*next));
        m_in_flight += input.size;
        ++m_running;
        return input;
      }
      m_changed.wait(lock);
    }
  }

  void done(uint64_t size) {
    {
      std::lock_guard<std::mutex> lock(m_mutex);
      m_in_flight -= size;
      --m_running;
    }
    m_changed.notify_all();
  }

private:
  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::vector<BatchInput> m_pending;
  std::vector<uint64_t> m_sizes;
  uint64_t m_budget;
  uint64_t m_in_flight = 0;
  size_t m_running = 0;
};

}  // namespace

namespace batch_detail {

uint32_t file_crc32_checked(const std::string& input, const FileStamp& before) {
  uint32_t crc = file_crc32(input);
  std::optional<FileStamp> after = stamp_of(input);
  if (!after || after->size != before.size || after->mtime_ns != before.mtime_ns) {
    throw Error(input + ": the file changed while it was converted; it will be converted again "
                        "by the next run");
  }
  return crc;
}

}  // namespace batch_detail

const char* batch_status_name(BatchStatus status) {
  switch (status) {
    case BatchStatus::k_converted: return "converted";
    case BatchStatus::k_skipped: return "skipped";
    case BatchStatus::k_failed: return "failed";
    case BatchStatus::k_dry_run: return "dry-run";
  }
  return "failed";
}

std::optional<size_t> pick_next_input(const std::vector<uint64_t>& pending, uint64_t in_flight,
                                      size_t running, uint64_t budget) {
  for (size_t i = 0; i < pending.size(); ++i) {
    if (in_flight + pending[i] <= budget) {
      return i;
    }
  }
  if (running == 0 && !pending.empty()) {
    return 0;  // larger than the whole budget: alone
  }
  return std::nullopt;
}

BatchSummary run_batch(const BatchOptions& options) {
  Clock::time_point start = Clock::now();
  if (options.output_dir.empty()) {
    throw Error("batch: expected an output folder (-o OUTDIR)", ExitStatus::k_usage);
  }
  if (options.sources.empty()) {
    throw Error("batch: expected at least one SRC (file, folder or @manifest)",
                ExitStatus::k_usage);
  }
  if (options.convert.verify && !options.convert.dry_run) {
    require_device(options.convert.device);  // once, before any thread (it loads the plugin)
  }
  // The format written decides the outputs' names: chosen once, so that a
  // wrong --format stops the batch before anything is listed.
  BatchNaming naming;
  naming.sharded = options.convert.sink.max_shard_size > 0;
  const SinkFormat& sink = choose_sink(
      "", options.convert.format.empty() && !naming.sharded ? "pt" : options.convert.format,
      naming.sharded);
  naming.format = sink.name;
  std::vector<BatchInput> listed = collect_batch_inputs(
      options.sources, options.globs, options.output_dir, options.on_skip, naming);
  BatchSummary summary;
  summary.listed = listed.size();
  if (listed.empty()) {
    throw Error("batch: no input matches " + join_globs(options.globs) + " in the given sources");
  }
  std::vector<BatchInput> inputs;
  for (BatchInput& input : listed) {
    if (in_shard(input.relative, options.shard)) {
      inputs.push_back(std::move(input));
    }
  }
  summary.inputs = inputs.size();
  summary.jobs = options.jobs != 0 ? options.jobs : available_cpus();
  summary.max_memory = options.max_memory != 0 ? options.max_memory : half_the_memory();

  // The report, written as inputs finish, so that it can be followed.
  std::ofstream report;
  if (options.report_path != "-" && !(options.report_path.empty() && options.convert.dry_run)) {
    summary.report_path = options.report_path;
    if (summary.report_path.empty()) {
      std::string name = "ckpt-convert-batch";
      if (options.shard.count > 1) {
        name += ".shard-" + std::to_string(options.shard.index) + "-of-" +
                std::to_string(options.shard.count);
      }
      summary.report_path = join(options.output_dir, name + ".jsonl");
    }
    std::error_code ec;
    fs::create_directories(fs::path(summary.report_path).parent_path().empty()
                               ? fs::path(".")
                               : fs::path(summary.report_path).parent_path(),
                           ec);
    report.open(summary.report_path, std::ios::out | std::ios::trunc);
    if (!report) {
      throw Error(summary.report_path + ": cannot write the report: " + std::strerror(errno));
    }
  }
  if (!options.convert.dry_run) {
    std::error_code ec;
    fs::create_directories(options.output_dir, ec);
    if (ec) {
      throw Error(options.output_dir + ": cannot create the output folder: " + ec.message());
    }
  }

  std::string fingerprint = batch_options_fingerprint(options.convert);
  spdlog::default_logger_raw();  // made here, not by the first threads that log at once
  Queue queue(std::move(inputs), summary.max_memory);
  std::mutex done_mutex;
  size_t done = 0;
  // Counts, reports and announces a finished input (under `done_mutex`).
  auto finish = [&](const BatchRecord& record) {
    ++done;
    BatchTotals* totals = &summary.failed;
    switch (record.status) {
      case BatchStatus::k_converted: totals = &summary.converted; break;
      case BatchStatus::k_skipped: totals = &summary.skipped; break;
      case BatchStatus::k_dry_run: totals = &summary.dry_run; break;
      case BatchStatus::k_failed: summary.failures.push_back(record); break;
    }
    if (record.status != BatchStatus::k_failed && !record.warnings.empty()) {
      summary.warned.push_back(record);
    }
    ++totals->inputs;
    totals->input_bytes += record.input_bytes;
    totals->output_bytes += record.output_bytes;
    if (report.is_open()) {
      report << format_batch_record(record) << '\n' << std::flush;
    }
    if (options.on_record) {
      options.on_record(record, done, summary.inputs);
    }
  };
  std::exception_ptr stopped;  // what broke outside any one input: rethrown once all stop
  auto worker = [&]() {
    while (std::optional<BatchInput> input = queue.take()) {
      if (options.on_start) {
        std::lock_guard<std::mutex> lock(done_mutex);
        options.on_start(*input, summary.inputs);
      }
      BatchRecord record = process(*input, options, fingerprint, naming, sink.name);
      queue.done(input->size);
      std::lock_guard<std::mutex> lock(done_mutex);
      if (stopped) {
        return;  // another worker failed to report: stop converting
      }
      try {
        finish(record);
      } catch (...) {
        stopped = std::current_exception();
      }
    }
  };
  size_t threads = std::min<size_t>(summary.jobs, std::max<size_t>(1, summary.inputs));
  std::vector<std::thread> pool;
  for (size_t i = 1; i < threads; ++i) {
    pool.emplace_back(worker);
  }
  worker();
  for (std::thread& thread : pool) {
    thread.join();
  }
  if (stopped) {
    std::rethrow_exception(stopped);
  }
  auto by_path = [](const BatchRecord& a, const BatchRecord& b) { return a.relative < b.relative; };
  std::sort(summary.failures.begin(), summary.failures.end(), by_path);
  std::sort(summary.warned.begin(), summary.warned.end(), by_path);
  if (report.is_open() && !report) {
    throw Error(summary.report_path + ": cannot write the report");
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return summary;
}

int batch_exit_code(const BatchSummary& summary) {
  return summary.failed.inputs == 0 ? 0 : static_cast<int>(ExitStatus::k_batch_failures);
}

std::string format_batch_record(const BatchRecord& record) {
  // Paths and keys are bytes: what is not UTF-8 is shown as U+FFFD.
  return batch_detail::record_json(record).dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace);
}

std::string format_batch_summary(const BatchSummary& s) {
  auto megabytes = [](uint64_t bytes) { return static_cast<double>(bytes) / 1e6; };
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line, "batch: %zu input%s", s.inputs, s.inputs == 1 ? "" : "s");
  out += line;
  if (s.inputs != s.listed) {
    out += " in this shard, of " + std::to_string(s.listed) + " listed";
  }
  std::snprintf(line, sizeof line, ", %u job%s, %.1f s\n", s.jobs, s.jobs == 1 ? "" : "s",
                s.seconds);
  out += line;
  out += "  status       inputs    input MB   output MB\n";
  std::pair<const char*, const BatchTotals*> rows[] = {{"converted", &s.converted},
                                                       {"skipped", &s.skipped},
                                                       {"dry-run", &s.dry_run},
                                                       {"failed", &s.failed}};
  for (const auto& [name, totals] : rows) {
    if (totals->inputs != 0 || std::strcmp(name, "dry-run") != 0) {
      std::snprintf(line, sizeof line, "  %-10s %8zu %11.1f %11.1f\n", name, totals->inputs,
                    megabytes(totals->input_bytes), megabytes(totals->output_bytes));
      out += line;
    }
  }
  constexpr size_t k_warned_shown = 10;  // the report has them all
  for (size_t i = 0; i < s.warned.size() && i < k_warned_shown; ++i) {
    const BatchRecord& warned = s.warned[i];
    out += "  " + std::string(batch_status_name(warned.status)) + " with warnings: " +
           warned.input + ": " + warned.warnings.front() +
           (warned.warnings.size() > 1 ? " (and " + std::to_string(warned.warnings.size() - 1) +
                                             " more)"
                                       : "") +
           "\n";
  }
  if (s.warned.size() > k_warned_shown) {
    out += "  … and " + std::to_string(s.warned.size() - k_warned_shown) +
           " more inputs with warnings (see the report)\n";
  }
  for (const BatchRecord& failure : s.failures) {
    out += "  failed (exit " + std::to_string(failure.exit_code) +
           "): " + failure.error.substr(0, failure.error.find('\n')) + "\n";
  }
  if (!s.report_path.empty()) {
    out += "  report: " + s.report_path + "\n";
  }
  return out;
}

}  // namespace ckpt
