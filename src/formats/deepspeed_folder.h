// The files of a DeepSpeed run folder, by name: which tag folder to read
// (`--tag`, IN itself when it holds model states, else what `latest` names)
// and what is in it (the ranks' optimizer files sorted by number, the model
// files, the BF16_Optimizer prefix), refusing by name the layouts that are
// not supported (tensor or pipeline parallel, MoE experts, NVMe offload, a
// universal checkpoint). deepspeed.cc decodes the files.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"

namespace ckpt::deepspeed {

// Throws `Error`: `<where>: <what>`.
[[noreturn]] void fail(const std::string& where, const std::string& what);

// `folder`/`name`, one slash between.
std::string join(const std::string& folder, const std::string& name);

struct RankFile {
  int64_t rank = 0;
  std::string name;
};

struct TagFiles {
  std::vector<RankFile> optim;     // sorted by rank, as numbers (v0.6.2+: natural sort)
  std::vector<RankFile> models3;   // stage 3: zero_pp_rank_R_mp_rank_00_model_states.pt
  bool model12 = false;            // mp_rank_00_model_states.pt
  bool bf16_prefix = false;        // BF16_Optimizer files (v0.6.2+)
};

// A run folder holds `latest`; a tag folder, model states; and with `--tag`
// a folder whose subfolders hold model states is a run. Without `--tag` such
// a folder is not claimed: it could as well be a zoo of tag folders
// (`batch`) as a run saved without `latest`, which explain_deepspeed then
// tells the user how to read.
bool claims_deepspeed(const std::string& folder, const ReadOptions& options);

// For a folder not claimed whose subfolders hold model states: that it is a
// run without `latest`, its tags, and to give --tag or a tag folder.
std::string explain_deepspeed(const std::string& folder);

// The tag folder to read and its tag: `--tag` (`tag`), `run` itself when it
// holds model states, else what `latest` names.
std::pair<std::string, std::string> tag_folder(const std::string& run, const std::string& tag);

// The rank and model files of the tag folder `folder`; refuses what is not
// supported, two runs' files in one folder, and a folder without optimizer files.
TagFiles classify(const std::string& folder);

// Ranks 0 … `world` - 1, each once in `files`: else names the missing one
// (`expected_name` with RANK for its number) or the extra one; `said_by`
// names what gave `world`.
void check_ranks(const std::string& folder, const std::vector<RankFile>& files, int64_t world,
                 const std::string& expected_name, const std::string& said_by);

}  // namespace ckpt::deepspeed
