// Whether a batch output is up to date, by its sidecar.
//
// Each output OUTDIR/P of a batch gets `OUTDIR/.ckpt-convert/P.json`, written
// after the output is in place: the input's size, mtime and CRC-32, the
// output's size and mtime, the fingerprint of the options, and the record of
// the conversion. A later run skips the input when all of them still hold.
// The sidecars mirror the output tree in a folder of their own, so that a
// loader that takes every file of an output folder meets only checkpoints;
// a sidecar found where earlier versions wrote it, `OUTDIR/P.ckpt-convert.json`,
// is read the same way and moved. Size and mtime are compared first; only
// when the mtime moved (a copy, a checkout, `touch`) is the input read again
// for its CRC-32, so an unchanged zoo costs one stat per file. CRC-32 finds
// changes, not attacks: it is a change detector, which is all resuming needs
// (a SHA-256 would need a dependency this project lacks).
//
// A shard folder is an input of many files: its sidecar lists the index and
// every shard the index names, each with its size, mtime and CRC-32, so that
// a touched shard is read again alone, and a new index or a changed shard
// makes the folder converted again. A folder output (`--max-shard-size`) is
// listed the same way, each file with its size and mtime.
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "ckpt/batch.h"
#include "ckpt/crc32.h"
#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/mapped_file.h"
#include "ckpt/temp_file.h"
#include "batch_internal.h"

namespace ckpt {

using json = nlohmann::ordered_json;

std::string batch_options_fingerprint(const ConvertOptions& options) {
  json rules = json::array();
  for (const Rule& rule : options.rules.rules()) {
    rules.push_back({{"rule", rule.describe()}, {"args", rule.args}});
  }
  json out;
  out["rules"] = rules;
  out["extract"] = options.extract;
  out["extract_key"] = options.extract_key ? json(*options.extract_key) : json(nullptr);
  out["location"] = options.location;
  std::vector<std::string> globals = options.allowed_globals;
  std::sort(globals.begin(), globals.end());
  out["allowed_globals"] = globals;
  out["verify"] = options.verify ? json(options.device) : json(nullptr);
  // The output's format and casts, named only when not the defaults, so
  // that the sidecars of earlier versions (which wrote pt, uncast) still hold.
  if (!options.format.empty() && options.format != "pt") {
    out["format"] = options.format;
  }
  if (options.sink.max_shard_size > 0) {
    out["max_shard_size"] = options.sink.max_shard_size;
  }
  if (options.sink.dtype) {
    out["dtype"] = std::string(dtype_name(*options.sink.dtype));
    json keep = json::array();
    for (const Rule& rule : options.sink.keep_dtype) {
      keep.push_back(rule.describe());
    }
    out["keep_dtype"] = keep;
  }
  if (options.sink.tied == TiedPolicy::k_dedupe) {
    out["tied"] = "dedupe";
    out["keep_tied"] = options.sink.keep_tied;
  }
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sidecar_path(const std::string& output_dir, const std::string& relative) {
  return (std::filesystem::path(output_dir) / k_records_folder / (relative + ".json")).string();
}

uint32_t file_crc32(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(path + ": cannot open: " + std::strerror(errno));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<uint8_t> buffer(4u << 20);
  uint32_t crc = 0;
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      throw Error(path + ": cannot read: " + std::strerror(saved));
    }
    if (n == 0) {
      break;
    }
    crc = crc32_update(crc, buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return crc;
}

namespace batch_detail {

std::optional<FileStamp> stamp_of(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    return std::nullopt;
  }
  FileStamp stamp;
  stamp.size = static_cast<uint64_t>(info.st_size);
  stamp.mtime_ns = static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
  return stamp;
}

json record_json(const BatchRecord& r) {
  json out;
  out["schema"] = "ckpt-convert.batch/2";
  out["input"] = r.input;
  out["path"] = r.relative;
  // A failed input has no output: its path would send a script to a file
  // that is not there (or, before this run, to an older one).
  out["output"] = r.status == BatchStatus::k_failed ? json(nullptr) : json(r.output);
  out["status"] = batch_status_name(r.status);
  out["reason"] = r.reason;
  out["exit_code"] = r.exit_code;
  out["error"] = r.error.empty() ? json(nullptr) : json(r.error);
  out["stale_output"] = r.stale_output.empty() ? json(nullptr) : json(r.stale_output);
  out["input_bytes"] = r.input_bytes;
  out["output_bytes"] = r.output_bytes;
  out["output_format"] = r.output_format.empty() ? json(nullptr) : json(r.output_format);
  out["dtype"] = r.dtype.empty() ? json(nullptr) : json(r.dtype);
  out["shards"] = json::array();
  for (const ShardWritten& shard : r.shards) {
    out["shards"].push_back(
        {{"file", shard.file}, {"names", shard.tensors}, {"bytes", shard.bytes}});
  }
  out["tensors"] = r.tensors;
  out["storages"] = r.storages;
  out["storage_bytes"] = r.storage_bytes;
  out["renamed"] = r.renamed;
  out["dropped"] = r.dropped;
  out["rules"] = json::array();
  for (const BatchRuleCount& rule : r.rules) {
    out["rules"].push_back(
        {{"rule", rule.rule}, {"origin", rule.origin}, {"matches", rule.matches}});
  }
  out["warnings"] = r.warnings;
  out["verified_on"] = r.verified_on.empty() ? json(nullptr) : json(r.verified_on);
  out["seconds"] = r.seconds;
  return out;
}

// The fields a skipped input takes over from its sidecar's record.
void take_results(const json& in, BatchRecord& r) {
  r.output_bytes = in.value("output_bytes", uint64_t{0});
  r.shards.clear();
  if (in.contains("shards") && in["shards"].is_array()) {
    for (const json& shard : in["shards"]) {
      r.shards.push_back({shard.value("file", ""), shard.value("names", size_t{0}),
                          shard.value("bytes", uint64_t{0})});
    }
  }
  r.tensors = in.value("tensors", size_t{0});
  r.storages = in.value("storages", size_t{0});
  r.storage_bytes = in.value("storage_bytes", uint64_t{0});
  r.renamed = in.value("renamed", size_t{0});
  r.dropped = in.value("dropped", size_t{0});
  r.rules.clear();
  if (in.contains("rules") && in["rules"].is_array()) {
    for (const json& rule : in["rules"]) {
      r.rules.push_back({rule.value("rule", ""), rule.value("origin", ""),
                         rule.value("matches", size_t{0})});
    }
  }
  r.warnings.clear();
  if (in.contains("warnings") && in["warnings"].is_array()) {
    for (const json& warning : in["warnings"]) {
      if (warning.is_string()) {
        r.warnings.push_back(warning.get<std::string>());
      }
    }
  }
  if (in.contains("verified_on") && in["verified_on"].is_string()) {
    r.verified_on = in["verified_on"].get<std::string>();
  }
}

SidecarPaths sidecar_paths(const std::string& output_dir, const std::string& relative) {
  SidecarPaths paths;
  paths.current = sidecar_path(output_dir, relative);
  paths.legacy = (std::filesystem::path(output_dir) / relative).string() + ".ckpt-convert.json";
  return paths;
}

void remove_sidecars(const SidecarPaths& sidecars) {
  std::error_code ec;
  std::filesystem::remove(sidecars.current, ec);
  std::filesystem::remove(sidecars.legacy, ec);
}

// Writes a sidecar, making the folders of OUTDIR/.ckpt-convert/ it needs.
void write_sidecar_file(const std::string& path, const json& sidecar) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) {
    throw Error(path + ": cannot create its folder: " + ec.message());
  }
  write_json_file(path, sidecar);
}

namespace {

// The files of a run folder a folder format reads whole (a DCP checkpoint, a
// DeepSpeed run): every regular file in it, by name, sorted.
std::vector<std::string> run_folder_files(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(folder, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code ignored;
    if (it->is_regular_file(ignored)) {
      names.push_back(it->path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::vector<InputPart> stamp_input(const std::string& input, bool folder) {
  std::vector<std::string> names{""};
  std::string prefix;
  if (folder && !holds_hf_index(input)) {
    prefix = input + "/";
    names = run_folder_files(input);
  } else if (folder) {
    std::string index = find_hf_index(input);
    std::string name = std::filesystem::path(index).filename().string();
    prefix = index.substr(0, index.size() - name.size());
    MappedFile file = MappedFile::open(index);
    names = {name};
    for (const std::string& shard : parse_hf_index(file.bytes(), index).shards) {
      names.push_back(shard);
    }
  }
  std::vector<InputPart> parts;
  for (const std::string& name : names) {
    std::string path = name.empty() ? input : prefix + name;
    std::optional<FileStamp> stamp = stamp_of(path);
    if (!stamp) {
      throw Error(path + ": cannot read: " + std::strerror(errno));
    }
    parts.push_back({name, *stamp, 0});
  }
  return parts;
}

void crc_input(const std::string& input, std::vector<InputPart>& parts) {
  for (InputPart& part : parts) {
    part.crc32 = file_crc32_checked(
        part.name.empty() ? input : (std::filesystem::path(input) / part.name).string(),
        part.stamp);
  }
}

namespace {

// Why the file `path` is not the one `was` ({size, mtime_ns[, crc32]})
// describes, or nothing. A touched file (same size, other mtime) is read for
// its CRC-32 when `was` has one: the same bytes are the same file, and
// `was` takes the new mtime (`touched` set).
std::optional<std::string> file_changed(const std::string& path, json& was, bool& touched) {
  std::optional<FileStamp> stamp = stamp_of(path);
  if (!stamp || was.value("size", uint64_t{0}) != stamp->size) {
    return "changed";
  }
  if (was.value("mtime_ns", int64_t{0}) == stamp->mtime_ns) {
    return std::nullopt;
  }
  if (!was.contains("crc32") || was.value("crc32", uint32_t{0}) != file_crc32(path)) {
    return "changed";
  }
  was["mtime_ns"] = stamp->mtime_ns;
  touched = true;
  return std::nullopt;
}

// Why the folder output `output` does not hold the files `was.files` lists.
std::optional<std::string> folder_output_changed(const std::string& output, json& was) {
  if (!was["files"].is_array() || was["files"].empty()) {
    return "output changed";
  }
  bool touched = false;  // never set: an output's files have no CRC-32, their mtime must hold
  for (json& file : was["files"]) {
    std::string name = file.value("name", "");
    if (name.empty() ||
        file_changed((std::filesystem::path(output) / name).string(), file, touched)) {
      return "output changed";
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> check_up_to_date(const std::string& input, bool folder,
                                            const std::string& output,
                                            const SidecarPaths& sidecars,
                                            const std::string& fingerprint, bool dry_run,
                                            BatchRecord& record) {
  std::optional<FileStamp> out_stamp = stamp_of(output);
  if (!out_stamp) {
    return "new";
  }
  std::ifstream file(sidecars.current);
  bool legacy = !file;
  if (legacy) {
    file.open(sidecars.legacy);
  }
  if (!file) {
    return "no sidecar";
  }
  json sidecar = json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (!sidecar.is_object() || sidecar.value("schema", "") != "ckpt-convert.sidecar/1" ||
      !sidecar.contains("input") || !sidecar.contains("output") || !sidecar.contains("record")) {
    return "unreadable sidecar";
  }
  if (sidecar.value("options", "") != fingerprint) {
    return "options changed";
  }
  json& was_out = sidecar["output"];
  if (was_out.contains("files")) {
    if (std::optional<std::string> why = folder_output_changed(output, was_out)) {
      return why;
    }
  } else if (was_out.value("size", uint64_t{0}) != out_stamp->size ||
             was_out.value("mtime_ns", int64_t{0}) != out_stamp->mtime_ns) {
    return "output changed";
  }
  json& was_in = sidecar["input"];
  bool touched = false;
  if (was_in.contains("files") != folder) {
    return "input changed";
  }
  if (!folder) {
    if (!stamp_of(input)) {
      throw Error(input + ": cannot read: " + std::strerror(errno));
    }
    if (file_changed(input, was_in, touched)) {
      return "input changed";
    }
  } else if (!holds_hf_index(input)) {
    // A run folder: the same files, none changed.
    std::vector<std::string> now = run_folder_files(input);
    json& files = was_in["files"];
    if (!files.is_array() || files.size() != now.size()) {
      return "input changed";
    }
    for (size_t i = 0; i < now.size(); ++i) {
      if (files[i].value("name", "") != now[i] ||
          file_changed((std::filesystem::path(input) / now[i]).string(), files[i], touched)) {
        return "input changed";
      }
    }
  } else {
    // The index the reader would take now must be the one listed first.
    std::string index;
    try {
      index = find_hf_index(input);
    } catch (const Error&) {
      return "input changed";  // converting it says why
    }
    json& files = was_in["files"];
    if (!files.is_array() || files.empty() ||
        files[0].value("name", "") != std::filesystem::path(index).filename().string()) {
      return "input changed";
    }
    for (json& part : files) {
      std::string name = part.value("name", "");
      if (name.empty() ||
          file_changed((std::filesystem::path(input) / name).string(), part, touched)) {
        return "input changed";
      }
    }
  }
  if (folder) {
    record.input_bytes = was_in.value("size", record.input_bytes);  // its index and shards
  }
  if (!dry_run && (touched || legacy)) {
    write_sidecar_file(sidecars.current, sidecar);
  }
  if (!dry_run) {
    std::error_code ec;
    std::filesystem::remove(sidecars.legacy, ec);  // moved, or left by an older version
  }
  take_results(sidecar["record"], record);
  return std::nullopt;
}

void write_sidecar(const std::string& sidecar_file, const std::string& output,
                   const std::vector<InputPart>& input, bool folder,
                   const std::string& fingerprint, const std::string& tool_version,
                   const BatchRecord& record) {
  std::optional<FileStamp> out_stamp = stamp_of(output);
  if (!out_stamp) {
    throw Error(output + ": cannot stat the output just written: " + std::strerror(errno));
  }
  json sidecar;
  sidecar["schema"] = "ckpt-convert.sidecar/1";
  sidecar["tool"] = tool_version;
  sidecar["options"] = fingerprint;
  if (!folder && input.size() == 1) {
    sidecar["input"] = {{"path", record.input},
                        {"size", input[0].stamp.size},
                        {"mtime_ns", input[0].stamp.mtime_ns},
                        {"crc32", input[0].crc32}};
  } else {
    json files = json::array();
    uint64_t size = 0;
    for (const InputPart& part : input) {
      files.push_back({{"name", part.name},
                       {"size", part.stamp.size},
                       {"mtime_ns", part.stamp.mtime_ns},
                       {"crc32", part.crc32}});
      size += part.stamp.size;
    }
    sidecar["input"] = {{"path", record.input}, {"size", size}, {"files", files}};
  }
  if (record.shards.empty()) {
    sidecar["output"] = {{"size", out_stamp->size}, {"mtime_ns", out_stamp->mtime_ns}};
  } else {
    json files = json::array();
    for (const ShardWritten& shard : record.shards) {
      std::string path = (std::filesystem::path(output) / shard.file).string();
      std::optional<FileStamp> stamp = stamp_of(path);
      if (!stamp) {
        throw Error(path + ": cannot stat the output just written: " + std::strerror(errno));
      }
      files.push_back({{"name", shard.file}, {"size", stamp->size}, {"mtime_ns", stamp->mtime_ns}});
    }
    sidecar["output"] = {{"size", record.output_bytes}, {"files", files}};
  }
  sidecar["record"] = record_json(record);
  write_sidecar_file(sidecar_file, sidecar);
}

void write_json_file(const std::string& path, const json& value) {
  std::string text = value.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  TempFile temp(path);
  const char* data = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(temp.fd(), data, left);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error(path + ": cannot write: " + std::strerror(errno));
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  temp.commit();
}

}  // namespace batch_detail
}  // namespace ckpt
