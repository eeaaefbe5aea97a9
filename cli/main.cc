// ckpt-convert: turns multi-GPU PyTorch checkpoints into clean single-GPU
// state dicts. This is a thin shell over libckpt: parse, dispatch, and the one
// place that turns errors into a message and an exit code.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <exception>

#include "ckpt/error.h"
#include "commands.h"
#include "convert_options.h"
#include "huge_heap.h"
#include "json_errors.h"
#include "terminal.h"
#include "usage.h"

int main(int argc, char** argv) {
  ckpt::cli::prefer_huge_pages_for_the_heap();
  CLI::App app{"Turn multi-GPU PyTorch checkpoints into clean single-GPU state dicts.",
               "ckpt-convert"};
  app.require_subcommand(0, 1);
  app.set_version_flag("-V,--version", "ckpt-convert " CKPT_VERSION);
  ckpt::cli::Runner convert = ckpt::cli::add_convert(app);
  CLI::App* inspect_command = app.add_subcommand("inspect", "Summarize a checkpoint without running it");
  ckpt::cli::Runner inspect = ckpt::cli::add_inspect(*inspect_command);
  CLI::App* batch_command = app.add_subcommand("batch", "Convert many checkpoints into a mirrored tree");
  ckpt::cli::Runner batch = ckpt::cli::add_batch(*batch_command);
  CLI::App* check_command = app.add_subcommand("check", "Check a state dict before deployment (CI gate)");
  ckpt::cli::Runner check = ckpt::cli::add_check(*check_command);
  // CLI11 has no option whose value is optional only in `--opt=value` form:
  // a bare `--extract` becomes `--extract=*` ("find the state dict").
  std::vector<std::string> in_order(argv + 1, argv + argc);
  if (in_order.empty()) {
    std::fputs(ckpt::cli::k_short_usage, stderr);
    return static_cast<int>(ckpt::ExitStatus::k_usage);
  }
  if (in_order[0] == "help") {
    return ckpt::cli::print_help(app, in_order);
  }
  std::string command = ckpt::cli::command_of(in_order);
  bool json = ckpt::cli::wants_json(in_order);
  std::vector<std::string> args;
  for (auto arg = in_order.rbegin(); arg != in_order.rend(); ++arg) {
    args.push_back(*arg == "--extract" ? "--extract=*" : *arg);
  }
  auto usage_error = [&](const std::string& message) {
    if (json) {
      std::fputs(ckpt::cli::error_json(command, 2, message).c_str(), stdout);
    }
    ckpt::cli::print_error_lines(message);
    return static_cast<int>(ckpt::ExitStatus::k_usage);
  };
  try {
    ckpt::cli::check_rule_option_values(in_order);
    ckpt::cli::check_bare_extract(in_order);
    app.parse(args);  // CLI11 takes the arguments reversed
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      return app.exit(e);  // --help, --version
    }
    std::string help = command == "convert" ? "ckpt-convert --help" : "ckpt-convert " + command + " --help";
    return usage_error(std::string(e.what()) + " (see " + help + ")");
  } catch (const ckpt::Error& e) {
    return usage_error(e.what());
  }
  try {
    if (batch_command->parsed()) {
      return batch();
    }
    if (check_command->parsed()) {
      return check();
    }
    return inspect_command->parsed() ? inspect() : convert();
  } catch (const ckpt::Error& e) {
    ckpt::cli::print_error_lines(e.what());
    return static_cast<int>(e.status());
  } catch (const std::bad_alloc&) {
    ckpt::cli::print_error_lines("out of memory");
    return static_cast<int>(ckpt::ExitStatus::k_bad_input);
  } catch (const std::exception& e) {
    ckpt::cli::print_error_lines(std::string("internal error: ") + e.what());
    return static_cast<int>(ckpt::ExitStatus::k_bad_input);
  }
}
