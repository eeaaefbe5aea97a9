// ckpt-convert: turns multi-GPU PyTorch checkpoints into clean single-GPU
// state dicts. This is a thin shell over libckpt: parse, dispatch, and the one
// place that turns errors into a message and an exit code.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "ckpt/error.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Turn multi-GPU PyTorch checkpoints into clean single-GPU state dicts.",
               "ckpt-convert"};
  app.require_subcommand(0, 1);
  ckpt::cli::Runner convert = ckpt::cli::add_convert(app);
  CLI::App* inspect_command = app.add_subcommand("inspect", "Summarize a checkpoint without running it");
  ckpt::cli::Runner inspect = ckpt::cli::add_inspect(*inspect_command);
  app.footer(
      "Exit codes: 0 done; 1 bad or unsupported input, I/O error; 2 usage; 3 verification "
      "failed; 4 device unavailable.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : static_cast<int>(ckpt::ExitStatus::k_usage);
  }
  try {
    return inspect_command->parsed() ? inspect() : convert();
  } catch (const ckpt::Error& e) {
    std::fprintf(stderr, "ckpt-convert: error: %s\n", e.what());
    return static_cast<int>(e.status());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "ckpt-convert: error: out of memory\n");
    return static_cast<int>(ckpt::ExitStatus::k_bad_input);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt-convert: error: internal error: %s\n", e.what());
    return static_cast<int>(ckpt::ExitStatus::k_bad_input);
  }
}
