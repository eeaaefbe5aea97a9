// ckpt-convert inspect FILE [--json]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/inspect.h"
#include "commands.h"
#include "json_errors.h"

namespace ckpt::cli {

Runner add_inspect(CLI::App& app) {
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  app.add_option("FILE", args->path, "Checkpoint to summarize")->required();
  app.add_flag("--json", args->json, "Print the report as JSON");
  return [args]() -> int {
    return run_with_json_errors(args->json, "inspect", [&args]() -> int {
      InspectReport report = inspect_checkpoint(args->path);
      std::string text = args->json ? format_inspect_json(report) : format_inspect_text(report);
      std::fputs(text.c_str(), stdout);
      return 0;
    });
  };
}

}  // namespace ckpt::cli
