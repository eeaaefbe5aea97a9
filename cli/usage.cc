// `ckpt-convert` alone and `ckpt-convert help [COMMAND]` (see usage.h).
#include "usage.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "ckpt/error.h"
#include "ckpt/spellcheck.h"
#include "ckpt/spellcheck.h"
#include "terminal.h"

namespace ckpt::cli {

const char* const k_short_usage =
    R"(Usage: ckpt-convert IN OUT [options]        convert one checkpoint
       ckpt-convert inspect FILE             what a checkpoint holds, without running it
       ckpt-convert batch SRC... -o OUTDIR   convert a model zoo into a mirrored tree
       ckpt-convert check FILE...            the CI gate before deployment

Examples:
  ckpt-convert ddp_epoch90.pth model.pth --device cuda:0
  ckpt-convert checkpoint.pth.tar weights.pth --extract
  ckpt-convert batch zoo/ -o zoo-clean/ --jobs 8

ckpt-convert help [COMMAND] shows every option and more examples.
)";

int print_help(const CLI::App& app, const std::vector<std::string>& args) {
  if (args.size() > 2) {
    print_error_lines("help takes one COMMAND at most (see ckpt-convert help)");
    return static_cast<int>(ExitStatus::k_usage);
  }
  std::string name = args.size() == 2 ? args[1] : "convert";
  if (name == "convert") {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  }
  std::vector<std::string> names = {"convert"};
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == name) {
      std::fputs(sub->help(app.get_name()).c_str(), stdout);
      return 0;
    }
    names.push_back(sub->get_name());
  }
  std::string hint;
  if (std::optional<std::string> close = closest_match(name, names)) {
    hint = ", did you mean '" + *close + "'?";
  } else {
    hint = " (commands: convert, inspect, batch, check)";
  }
  print_error_lines("unknown command '" + name + "'" + hint);
  return static_cast<int>(ExitStatus::k_usage);
}

}  // namespace ckpt::cli
