// Shared between the files of src/batch/: sidecars and records as JSON.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "ckpt/batch.h"

namespace ckpt::batch_detail {

struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

// Size and mtime of `path`, or nothing when it cannot be stat'ed (errno set).
std::optional<FileStamp> stamp_of(const std::string& path);

// A record as the JSON object of one report line.
nlohmann::ordered_json record_json(const BatchRecord& record);

// Returns why `output` must be (re)made from `input`, or nothing when its
// sidecar shows it up to date; then `record` takes over the sidecar's
// results (tensors, bytes, rules). A touched input whose CRC-32 is unchanged
// is up to date, and its sidecar is updated with the new mtime. Throws
// `Error` when the input cannot be read.
std::optional<std::string> check_up_to_date(const std::string& input, const std::string& output,
                                            const std::string& fingerprint, BatchRecord& record);

// Writes `output`'s sidecar: the input's stamp and CRC-32, the output's
// size and mtime, `fingerprint`, and `record`.
void write_sidecar(const std::string& output, const FileStamp& input_stamp, uint32_t input_crc,
                   const std::string& fingerprint, const std::string& tool_version,
                   const BatchRecord& record);

// The CRC-32 of `input`, which must still have the stamp `before` once read
// (else it changed during the conversion: throws `Error`).
uint32_t file_crc32_checked(const std::string& input, const FileStamp& before);

// Writes `value` to `path` through a temporary file beside it.
void write_json_file(const std::string& path, const nlohmann::ordered_json& value);

}  // namespace ckpt::batch_detail
