// ckpt-convert inspect FILE|FOLDER [--json] [--tag TAG]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "ckpt/inspect.h"
#include "commands.h"
#include "json_errors.h"

namespace ckpt::cli {

const char* const k_footer = R"(WHAT IT SHOWS
  The container (zip, legacy, safetensors, an HF shard index, a DeepSpeed ZeRO run or a
  torch Distributed Checkpoint folder) and what wrote it (torch; DeepSpeed's stage,
  version and world size; DCP's torch profile), the files read, the top-level keys, each
  state dict with its tensors, parameters, bytes by dtype, storage locations and the
  wrapper prefixes its keys carry, and every global the pickles name (flagged when
  torch.load without weights_only would import it and may run code). Nothing in the file
  is run and no tensor byte is read. A sharded folder that cannot be consolidated (a rank
  file missing, tensor parallelism, NVMe offload) is an error that says why.

EXAMPLES
  ckpt-convert inspect ddp_epoch90.pth
  ckpt-convert inspect checkpoint.pth.tar --json | jq '.state_dicts[].wrappers'
  ckpt-convert inspect runs/zero2 --tag global_step1200
  ckpt-convert inspect fsdp_ckpt/pytorch_model_fsdp_0
)";

Runner add_inspect(CLI::App& app) {
  app.footer(k_footer);
  struct Args {
    std::string path;
    bool json = false;
    ReadOptions read;
  };
  auto args = std::make_shared<Args>();
  app.add_option("FILE", args->path, "Checkpoint (file or folder) to summarize")->required();
  app.add_flag("--json", args->json, "Print the report as JSON");
  app.add_option("--tag", args->read.tag,
                 "A DeepSpeed run folder: read TAG instead of the tag its `latest` names")
      ->option_text("TAG");
  return [args]() -> int {
    return run_with_json_errors(args->json, "inspect", [&args]() -> int {
      InspectReport report = inspect_checkpoint(args->path, args->read);
      std::string text = args->json ? format_inspect_json(report) : format_inspect_text(report);
      std::fputs(text.c_str(), stdout);
      return 0;
    });
  };
}

}  // namespace ckpt::cli
