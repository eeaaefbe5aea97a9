// ckpt-convert check FILE... [options]: the CI gate (see include/ckpt/check.h).
// Each file is checked and reported in turn (its problems, one error line
// each, then its passed/failed line), and the run ends with one summary line;
// exit 0 when every file passes, 3 when any fails, 1 when the only failures
// are files that cannot be read.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/check.h"
#include "ckpt/error.h"
#include "commands.h"
#include "json_errors.h"
#include "terminal.h"

namespace ckpt::cli {
namespace {

struct CheckArgs {
  CheckOptions options;
  std::vector<std::string> paths;
  std::string expect_keys;
  std::string expect_model;
  std::string key;
  std::string dtype;
  bool json = false;
  bool quiet = false;
};

const char* const k_footer = R"footer(CHECKS
  Always: the file reads without running anything, its model state dict is found (as
  --extract finds it; --key names it), every storage record matches its CRC-32, every
  storage location can be restored here, and it names no global that would run code in
  Python. On --device cuda:N every tensor is copied to the GPU and back.
  --expect-keys/--expect-model: missing and unexpected keys and size mismatches, as
  load_state_dict(strict=True) reports them; not dtypes, which it casts (--dtype asks for
  one). --no-wrapper-prefixes: no key starts with module., _orig_mod. or _forward_module.,
  or holds _fsdp_wrapped_module or _checkpoint_wrapped_module. --finite: no NaN or Inf.
  --dtype D: every floating-point tensor is D (integer and bool tensors are left alone, as
  Module.to(dtype) leaves them).
  When every key starts with the same wrapper prefix, one line says so instead of a line
  per key (and instead of every key missing and unexpected):
    FILE: every key starts with 'module.' (a DataParallel/DDP wrapper): convert first:
    ckpt-convert FILE OUT

OUTPUT
  Each FILE in turn: one "ckpt-convert: error: FILE: <problem>" line per problem (or one
  error line if it cannot be read), then "FILE: check passed (...)" or "FILE: check failed
  (...)". The last line of every run that checked files is the summary:
    check: N files, P passed, F failed[, U unreadable][: COUNT KIND, ...]
  KIND in this order: missing, unexpected, shape, dtype, wrapper, non_finite, global,
  corrupt, device, location; only those found. -q prints only the error lines.
  --json prints one object on stdout for every outcome (schema ckpt-convert.check/2: status,
  exit_code, error, summary, files[]).

EXPECTED KEYS FILE
  One key a line, optionally with its shape and dtype, as this prints them:
    for k, v in model.state_dict().items(): print(k, list(v.shape), v.dtype)
  or JSON: {"conv.weight": [8, 3, 3, 3], ...}, or ["conv.weight", ...].

EXIT CODES
  0 every file passed; 3 a file failed (every problem listed, one line each); 1 a file
  could not be read or has no state dict, and none failed; 2 usage or a bad expected-keys
  file; 4 device unavailable. An unreadable file does not stop the others.

EXAMPLES
  ckpt-convert check model.pth --expect-keys keys.txt --no-wrapper-prefixes --finite
  ckpt-convert check release/*.pth --expect-keys keys.txt --dtype float32
  ckpt-convert check model.pth --expect-model model_scripted.pt --device cuda:0 --dtype float16
)footer";

int run(CheckArgs& args) {
  CheckOptions& o = args.options;
  if (!args.key.empty()) {
    o.state_dict_key = args.key;
  }
  std::vector<CheckReport> reports;
  try {
    if (!args.dtype.empty()) {
      o.dtype = parse_dtype_name(args.dtype);
    }
    if (!args.expect_keys.empty()) {
      o.expected = load_expected_keys(args.expect_keys);
    } else if (!args.expect_model.empty()) {
      o.expected = expected_keys_from_model(args.expect_model);
    }
    for (const std::string& path : args.paths) {
      o.path = path;
      CheckReport report;
      try {
        report = check_checkpoint(o);
      } catch (const Error& e) {
        if (e.status() != ExitStatus::k_bad_input) {
          throw;  // usage, an unavailable device: no file can be checked
        }
        report.path = path;
        report.device = o.device;
        report.error = e.what();
        print_error_lines(report.error);
        reports.push_back(std::move(report));
        continue;
      }
      for (const CheckProblem& problem : report.problems) {
        print_error_lines(path + ": " + problem.message);
      }
      if (!args.quiet) {
        std::fputs(format_check_text(report).c_str(), stderr);
      }
      reports.push_back(std::move(report));
    }
  } catch (const Error& e) {
    if (args.json) {
      std::fputs(format_check_json(reports, static_cast<int>(e.status()), e.what()).c_str(), stdout);
    }
    throw;
  }
  int status = static_cast<int>(check_exit_status(reports));
  std::string summary = format_check_summary(reports);
  if (!args.quiet) {
    std::fputs(summary.c_str(), stderr);
  }
  if (args.json) {
    summary.pop_back();  // the newline
    std::fputs(format_check_json(reports, status, status == 0 ? "" : summary).c_str(), stdout);
  }
  return status;
}

}  // namespace

Runner add_check(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CheckOptions& o = args->options;
  app.footer(k_footer);
  app.add_option("FILE", args->paths, "Checkpoints to check, each in turn")->required();
  app.add_option("--device", o.device, "Device every tensor is loaded on (cpu, cuda, cuda:N)")
      ->capture_default_str();
  CLI::Option* keys = app.add_option("--expect-keys", args->expect_keys,
                                     "File of the keys (and shapes) the model expects");
  CLI::Option* model = app.add_option("--expect-model", args->expect_model,
                                      "TorchScript model (torch.jit.save) whose parameters and "
                                      "buffers are the expected keys");
  keys->excludes(model);
  model->excludes(keys);
  app.add_option("--key", args->key, "Top-level key holding the model's state dict");
  app.add_flag("--no-wrapper-prefixes", o.no_wrapper_prefixes,
               "Fail when a key still carries a wrapper prefix (module., _orig_mod., ...)");
  app.add_flag("--finite", o.finite, "Fail when a tensor holds NaN or Inf");
  app.add_option("--dtype", args->dtype, "Fail when a floating-point tensor is not of dtype D")
      ->option_text("D");
  app.add_option("--allow-global", o.allowed_globals,
                 "Accept this global (module.name) though it may run code (repeatable)")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--json", args->json, "Print the result as JSON on stdout");
  app.add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  return [args]() -> int { return run(*args); };
}

}  // namespace ckpt::cli
