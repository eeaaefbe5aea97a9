// `ckpt-convert check`: the CI gate before deployment. Is this checkpoint's
// model state dict what the model expects (keys and shapes, as
// `load_state_dict(strict=True)` sees them), free of wrapper prefixes, of
// NaN/Inf, of unwanted dtypes, intact, and loadable on the device?
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "ckpt/tensor.h"

namespace ckpt {

// One key the model expects, with its shape and dtype when known.
struct ExpectedEntry {
  std::string key;
  std::optional<std::vector<int64_t>> sizes;
  // Read but not compared: load_state_dict(strict=True) casts on copy, so a
  // dtype difference is no failure unless `--dtype` asks for one.
  std::optional<Dtype> dtype;
};

struct ExpectedKeys {
  std::string source;                 // the file they came from
  std::vector<ExpectedEntry> entries;  // in the file's order
};

// Parses an expected-keys file named `name`. Either JSON — an object of key
// → shape (`[8, 3, 3, 3]`, or null) or → {"shape": [...], "dtype": "float32"},
// or an array of keys — or text: one key a line, optionally followed by its
// shape in brackets and its dtype, as Python prints them
// (`conv.weight [8, 3, 3, 3] torch.float32`, also `torch.Size([8, 3, 3, 3])`);
// blank lines and lines starting with `#` are skipped. Throws `Error`
// (usage) listing every bad line as `name:line: cause`.
ExpectedKeys parse_expected_keys(const std::string& name, const std::string& text);

// Reads and parses the expected-keys file at `path`.
ExpectedKeys load_expected_keys(const std::string& path);

// The named parameters and buffers of the TorchScript module at `path`
// (`torch.jit.save`), loaded through the LibTorch plugin, with their shapes;
// not their dtypes, since load_state_dict casts on copy (`--dtype` asks for
// one).
ExpectedKeys expected_keys_from_model(const std::string& path);


struct NonFinite {
  uint64_t nan = 0;
  uint64_t inf = 0;
  std::vector<int64_t> first;  // index of the first NaN or Inf, when any
};

// Counts the elements of `tensor` that are NaN or ±Inf (a complex element
// when either part is), reading its bytes where they are (no LibTorch).
// Dtypes without such values (integers, bool, quantized) count none.
NonFinite count_non_finite(const TensorRef& tensor);

enum class CheckProblemKind {
  k_missing,      // a key the model expects is not in the file
  k_unexpected,   // a key in the file the model does not expect
  k_shape,        // a key of both, with another shape
  k_dtype,        // a floating-point tensor of another dtype than `--dtype`
  k_wrapper,      // a key still carries a wrapper's prefix (`module.`), or every key does
  k_non_finite,   // a tensor holds NaN or Inf
  k_global,       // the file names a global that would run code in Python
  k_corrupt,      // a storage record's bytes do not match its CRC-32
  k_device,       // a tensor cannot be loaded on the device
  k_location,     // a storage's location tag torch.load cannot restore on this machine
};

// The problem kind's name in reports: `missing`, `unexpected`, `shape`, …
const char* check_problem_name(CheckProblemKind kind);

// Every kind, in the order of the enum: the order of the summary's counts.
const std::vector<CheckProblemKind>& check_problem_kinds();

struct CheckProblem {
  CheckProblemKind kind = CheckProblemKind::k_missing;
  std::string key;      // the state-dict key concerned, or empty
  std::string message;  // one line, without the file name
};

struct CheckOptions {
  std::string path;
  std::string device = "cpu";
  std::optional<std::string> state_dict_key;  // top-level key of the state dict; else found
  std::optional<ExpectedKeys> expected;
  bool no_wrapper_prefixes = false;
  bool finite = false;
  std::optional<Dtype> dtype;
  std::vector<std::string> allowed_globals;   // not problems, though they may run code
};

struct CheckReport {
  std::string path;
  std::string error;            // why the file could not be checked (exit 1 alone), or empty
  std::string format;           // zip | legacy
  std::string state_dict;       // where it is: `(top level)`, `["state_dict"]`
  std::string device;
  std::string expected_source;  // the expectations' file, or empty
  size_t expected = 0;          // keys expected
  size_t keys = 0;              // keys in the state dict
  size_t tensors = 0;
  uint64_t bytes = 0;           // bytes of the storages its tensors use
  size_t storages_crc_checked = 0;
  size_t device_checked = 0;    // tensors loaded on a device other than the CPU
  std::vector<std::string> checks;     // what was checked, in words
  std::vector<CheckProblem> problems;  // in the order: keys, shapes, dtypes, wrappers, values, file
  double seconds = 0;

  bool checked() const { return error.empty(); }
  bool passed() const { return checked() && problems.empty(); }
};

// Runs every check `options` asks for on `options.path` (never executing
// it; LibTorch is loaded only for a device other than the CPU). Problems
// are collected, not thrown. When every key carries the same wrapper prefix
// (`module.`, `_orig_mod.`, `_forward_module.`) and `no_wrapper_prefixes`
// or expected keys without that prefix are checked, one `wrapper` problem
// saying how to convert replaces the per-key wrapper and key problems.
// Throws `Error` for what prevents checking: an unreadable file (bad input),
// no state dict (bad input), an unavailable device.
CheckReport check_checkpoint(const CheckOptions& options);

// The `Error` (status "verification failed") for a failed check: one line per
// problem, `<file>: <problem>`.
std::string check_failure_message(const CheckReport& report);

// The exit status of a run over `reports`, one per file: 3 (verification
// failed) when any file failed a check, else 1 (bad input) when any could
// not be read, else 0.
ExitStatus check_exit_status(const std::vector<CheckReport>& reports);

// One file's line for people (stderr): `FILE: check passed (…): checks` or
// `FILE: check failed (…): checks; N problem(s)`.
std::string format_check_text(const CheckReport& report);

// The run's last line on stderr, e.g.
// `check: 3 files, 1 passed, 1 failed, 1 unreadable: 2 missing, 1 shape`:
// the files, how many passed, failed a check and could not be read (only
// when any), then the problems of every file by kind in the order of
// `check_problem_kinds()` (only kinds that occur). Ends with a newline.
std::string format_check_summary(const std::vector<CheckReport>& reports);

// The one JSON object of `--json` (`ckpt-convert.check/2`, see
// docs/check.schema.json): the run's status, `exit_code` and `error`, the
// summary, and one entry per file in `reports` (empty when the run stopped
// before any file).
std::string format_check_json(const std::vector<CheckReport>& reports, int exit_code,
                              const std::string& error);

}  // namespace ckpt
