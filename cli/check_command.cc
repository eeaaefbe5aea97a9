// ckpt-convert check FILE [options]: the CI gate (see include/ckpt/check.h).
// Exit 0 when every check passes; 3 with one error line per problem.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/check.h"
#include "ckpt/error.h"
#include "commands.h"

namespace ckpt::cli {
namespace {

struct CheckArgs {
  CheckOptions options;
  std::string expect_keys;
  std::string expect_model;
  std::string key;
  std::string dtype;
  bool json = false;
  bool quiet = false;
};

const char* const k_footer = R"(CHECKS
  Always: the file reads without running anything, its model state dict is found (as
  --extract finds it; --key names it), every storage record matches its CRC-32, and it names
  no global that would run code in Python. On --device cuda:N every tensor is copied to the
  GPU and back.
  --expect-keys/--expect-model: missing and unexpected keys and size mismatches, as
  load_state_dict(strict=True) reports them. --no-wrapper-prefixes: no key starts with
  module., _orig_mod. or _forward_module., or holds _fsdp_wrapped_module or
  _checkpoint_wrapped_module. --finite: no NaN or Inf. --dtype D: every floating-point tensor
  is D (integer and bool tensors are left alone, as Module.to(dtype) leaves them).

EXPECTED KEYS FILE
  One key a line, optionally with its shape and dtype, as this prints them:
    for k, v in model.state_dict().items(): print(k, list(v.shape), v.dtype)
  or JSON: {"conv.weight": [8, 3, 3, 3], ...}, or ["conv.weight", ...].

EXIT CODES
  0 passed; 3 failed (every problem listed, one line each); 1 unreadable file or no state
  dict; 2 usage or a bad expected-keys file; 4 device unavailable.

EXAMPLES
  ckpt-convert check model.pth --expect-keys keys.txt --no-wrapper-prefixes --finite
  ckpt-convert check model.pth --expect-model model_scripted.pt --device cuda:0 --dtype float16
)";

int run(CheckArgs& args) {
  CheckOptions& o = args.options;
  if (!args.key.empty()) {
    o.state_dict_key = args.key;
  }
  CheckReport report;
  report.path = o.path;
  report.device = o.device;
  try {
    if (!args.dtype.empty()) {
      o.dtype = parse_dtype_name(args.dtype);
    }
    if (!args.expect_keys.empty()) {
      o.expected = load_expected_keys(args.expect_keys);
    } else if (!args.expect_model.empty()) {
      o.expected = expected_keys_from_model(args.expect_model);
    }
    report = check_checkpoint(o);
  } catch (const Error& e) {
    if (args.json) {
      std::fputs(format_check_json(report, static_cast<int>(e.status()), e.what()).c_str(), stdout);
    }
    throw;
  }
  if (report.passed()) {
    if (args.json) {
      std::fputs(format_check_json(report, 0, "").c_str(), stdout);
    }
    if (!args.quiet) {
      std::fputs(format_check_text(report).c_str(), stderr);
    }
    return 0;
  }
  Error failure(check_failure_message(report), ExitStatus::k_verify_failed);
  if (args.json) {
    std::fputs(format_check_json(report, static_cast<int>(failure.status()), failure.what()).c_str(),
               stdout);
  }
  throw failure;
}

}  // namespace

Runner add_check(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CheckOptions& o = args->options;
  app.footer(k_footer);
  app.add_option("FILE", o.path, "Checkpoint to check")->required();
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
