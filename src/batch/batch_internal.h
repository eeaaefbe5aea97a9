// Shared between the files of src/batch/: sidecars and records as JSON.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/batch.h"

namespace ckpt::batch_detail {

struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

// Size and mtime of `path`, or nothing when it cannot be stat'ed (errno set).
std::optional<FileStamp> stamp_of(const std::string& path);

// One file an input is read from: the input itself (`name` empty), or a file
// of a shard folder (`name` relative to it).
struct InputPart {
  std::string name;
  FileStamp stamp;
  uint32_t crc32 = 0;  // set by `crc_input`
};

// True when a folder format (a DeepSpeed run, a DCP checkpoint: source.h)
// claims the folder `path`, or recognises and refuses it: either way it is
// one input, whose conversion says why it is refused.
bool is_run_folder(const std::string& path);

// The files the input `input` is read from, stamped: itself; for a shard
// folder (`folder`), the index `find_hf_index` chooses, then each shard it
// names, once; for a run folder (`is_run_folder`), every file under it, in
// name order. Throws `Error` when one cannot be stat'ed, or the index
// cannot be found or parsed.
std::vector<InputPart> stamp_input(const std::string& input, bool folder);

// Sets the CRC-32 of every part of `input`, each of which must still have
// its stamp once read (`file_crc32_checked`).
void crc_input(const std::string& input, std::vector<InputPart>& parts);

// A record as the JSON object of one report line.
nlohmann::ordered_json record_json(const BatchRecord& record);

// Where the sidecar of one output is kept, and where versions before
// OUTDIR/.ckpt-convert/ kept it.
struct SidecarPaths {
  std::string current;  // OUTDIR/.ckpt-convert/<relative>.json
  std::string legacy;   // <output>.ckpt-convert.json
};

SidecarPaths sidecar_paths(const std::string& output_dir, const std::string& relative);

// Removes both sidecars of an output, whichever exist.
void remove_sidecars(const SidecarPaths& sidecars);

// Returns why `output` must be (re)made from `input`, or nothing when its
// sidecar (`sidecars.current`, else `sidecars.legacy`) shows it up to date;
// then `record` takes over the sidecar's results (tensors, bytes, rules). A
// touched input whose CRC-32 is unchanged is up to date, and its sidecar is
// updated with the new mtime; a legacy sidecar of an up-to-date output is
// moved to `sidecars.current`. With `dry_run` nothing is written or moved.
// Throws `Error` when the input cannot be read or the sidecar not written.
// A shard folder's (`folder`) sidecar lists each of its files so; a folder
// output's, each file of `record.shards`.
std::optional<std::string> check_up_to_date(const std::string& input, bool folder,
                                            const std::string& output,
                                            const SidecarPaths& sidecars,
                                            const std::string& fingerprint, bool dry_run,
                                            BatchRecord& record);

// Writes `output`'s sidecar to `sidecar` (making its folders): the input's
// stamp and CRC-32 (a shard folder, `folder`: each file's), the output's
// size and mtime (a folder output: of each file of `record.shards`),
// `fingerprint`, and `record`.
void write_sidecar(const std::string& sidecar, const std::string& output,
                   const std::vector<InputPart>& input, bool folder,
                   const std::string& fingerprint, const std::string& tool_version,
                   const BatchRecord& record);

// The CRC-32 of `input`, which must still have the stamp `before` once read
// (else it changed during the conversion: throws `Error`).
uint32_t file_crc32_checked(const std::string& input, const FileStamp& before);

// Writes `value` to `path` through a temporary file beside it.
void write_json_file(const std::string& path, const nlohmann::ordered_json& value);

}  // namespace ckpt::batch_detail
