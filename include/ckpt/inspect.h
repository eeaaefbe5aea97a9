// `ckpt-convert inspect`: what a checkpoint holds, read without running it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/globals.h"
#include "ckpt/rewrite.h"

namespace ckpt {

struct StateDictSummary {
  std::string path;                         // `(top level)`, `["model"]`: for people
  std::vector<PathStep> steps;              // the same, step by step
  bool built = false;                       // not in the file: what --extract builds
  size_t tensors = 0;
  int64_t elements = 0;                     // parameter count: elements of its tensors
  uint64_t bytes = 0;                       // bytes of the storages its tensors use
  bool has_metadata = false;
  std::map<std::string, size_t> dtypes;     // dtype → tensors
  std::map<std::string, uint64_t> dtype_bytes;  // dtype → bytes of its tensors' elements
  std::map<std::string, size_t> locations;  // storage location → tensors
  std::map<std::string, size_t> wrappers;   // wrapper prefix/component → keys with it
  // Names that are one tensor (the same view of one storage: a tied LM head
  // and embedding), each group in state-dict order.
  std::vector<std::vector<std::string>> aliases;
};

// A whole pickled model (`torch.save(model)`): its class and where it sits.
struct PickledModuleSummary {
  std::string class_name;  // `ResNet`
  std::string module;      // `torchvision.models.resnet`, `__main__`
  std::string path;        // `(top level)`, `["model"]`
};

struct InspectReport {
  std::string path;
  std::string format;       // zip | legacy | safetensors | hf-index | deepspeed | dcp
  std::string archive_name;
  std::string version;      // zip `version` record
  std::string torch_hint;   // which torch wrote it, as far as the records tell
  uint64_t file_bytes = 0;
  uint64_t pickle_bytes = 0;
  size_t tensors = 0;
  size_t storages = 0;
  uint64_t storage_bytes = 0;
  std::vector<std::string> top_level_keys;
  // An HF index: the shard files read, in order; a DeepSpeed or DCP folder:
  // every file read, relative to the folder.
  std::vector<std::string> shards;
  // What the format tells about the checkpoint, by name (`deepspeed_stage`,
  // `world_size`, `dcp_profile`, …; checkpoint.h `facts`).
  std::vector<std::pair<std::string, std::string>> facts;
  // A safetensors file's `__metadata__` (`format: pt`, `removed: kept` aliases).
  std::vector<std::pair<std::string, std::string>> metadata;
  std::optional<PickledModuleSummary> pickled_module;  // `--extract` gets its weights
  std::vector<StateDictSummary> state_dicts;
  std::vector<GlobalUse> globals;  // `benign == false`: would import/run code in Python
};

// Reads `path` (never its tensor bytes) and summarizes it; `options.tag`
// picks a DeepSpeed tag. Throws `Error`.
InspectReport inspect_checkpoint(const std::string& path, const ReadOptions& options = {});

// The report for people (several lines) or as one JSON object (schema
// `ckpt-convert.inspect/1`); `exit_code` and `error` describe the run (an
// empty report with an error when the file could not be read).
std::string format_inspect_text(const InspectReport& report);
std::string format_inspect_json(const InspectReport& report, int exit_code = 0,
                                const std::string& error = "");

}  // namespace ckpt
