// ckpt-convert inspect FILE [--json]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/inspect.h"
#include "commands.h"
#include "json_errors.h"

namespace ckpt::cli {

const char* const k_footer = R"(WHAT IT SHOWS
  The container (zip or legacy) and which torch wrote it, the top-level keys, each state
  dict with its tensors, parameters, bytes, dtypes, storage locations and the wrapper
  prefixes its keys carry, and every global the pickle names (flagged when torch.load
  without weights_only would import it and may run code). Nothing in the file is run and
  no tensor byte is read.

EXAMPLES
  ckpt-convert inspect ddp_epoch90.pth
  ckpt-convert inspect checkpoint.pth.tar --json | jq '.state_dicts[].wrappers'
)";

Runner add_inspect(CLI::App& app) {
  app.footer(k_footer);
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
