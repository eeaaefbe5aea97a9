// The conversion: read, rewrite, write to a temporary file, verify, rename.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/rewrite.h"
#include "ckpt/rules.h"
#include "ckpt/verify.h"

namespace ckpt {

struct ConvertOptions {
  std::string input;
  std::string output;
  std::string device = "cpu";    // where verification loads the tensors
  std::string location = "cpu";  // tag written on every storage; `keep` keeps the input's
  Rules rules = Rules::preset("unwrap");
  bool extract = false;          // write only the model's state dict
  std::optional<std::string> extract_key;
  bool dry_run = false;
  bool force = false;            // replace an existing OUT
  bool verify = true;
  std::vector<std::string> allowed_globals;
};

struct ConvertReport {
  std::string format;                 // input container: zip or legacy
  std::vector<StateDictRef> state_dicts;
  RewriteReport rewrite;
  size_t tensors = 0;                 // tensors written
  size_t storages = 0;                // storages written
  uint64_t storage_bytes = 0;
  uint64_t bytes_written = 0;         // size of OUT
  bool written = false;
  std::optional<VerifyReport> verified;
};

// Converts `options.input` into `options.output`. OUT appears only complete
// and verified (written beside it under a temporary name, then renamed); on
// any error nothing is left behind. Throws `Error` with the exit status.
ConvertReport convert(const ConvertOptions& options);

}  // namespace ckpt
