// The files of a DeepSpeed run folder (deepspeed_folder.h): which tag folder
// is read and what its files are, by name only. The DeepSpeed versions each
// rule comes from are named in deepspeed.cc's opening comment.
#include "formats/deepspeed_folder.h"

#include <re2/re2.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ckpt/error.h"
#include "ckpt/hf_index.h"

namespace ckpt::deepspeed {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

std::string join(const std::string& folder, const std::string& name) {
  return folder.empty() || folder.back() == '/' ? folder + name : folder + "/" + name;
}

namespace {

bool is_dir(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool is_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

// The names in `folder`, sorted; none when it cannot be listed.
std::vector<std::string> names_in(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool holds_model_states(const std::string& folder) {
  for (const std::string& name : names_in(folder)) {
    if (ends_with(name, "_model_states.pt")) {
      return true;
    }
  }
  return false;
}

// The tag folders under `run` (subfolders holding model states), for messages.
std::string tags_in(const std::string& run) {
  std::string tags;
  for (const std::string& name : names_in(run)) {
    if (is_dir(join(run, name)) && holds_model_states(join(run, name))) {
      tags += (tags.empty() ? "" : ", ") + name;
    }
  }
  return tags.empty() ? "none" : tags;
}

}  // namespace

namespace {

void check_tag_name(const std::string& where, const std::string& tag) {
  if (tag.empty() || tag == "." || tag == ".." || tag.find('/') != std::string::npos ||
      tag.find('\0') != std::string::npos) {
    fail(where, "tag " + quoted_name(tag) + " is no folder name inside the run folder");
  }
}

}  // namespace

bool claims_deepspeed(const std::string& folder, const ReadOptions& options) {
  return holds_model_states(folder) || is_file(join(folder, "latest")) ||
         (!options.tag.empty() && tags_in(folder) != "none");
}

std::string explain_deepspeed(const std::string& folder) {
  std::string tags = tags_in(folder);
  if (tags == "none") {
    return "";
  }
  // DeepSpeed writes `latest` after every rank has saved, and not at all
  // with save_checkpoint(save_latest=False).
  return "a DeepSpeed run folder with no `latest` file naming the tag to read (saved with "
         "save_latest=False, or copied without it): give --tag TAG, or the tag folder itself "
         "(tags here: " + tags + ")";
}

std::pair<std::string, std::string> tag_folder(const std::string& run, const std::string& tag) {
  if (!tag.empty()) {
    check_tag_name(run + ": --tag", tag);
    std::string folder = join(run, tag);
    if (!is_dir(folder)) {
      fail(run, "--tag " + tag + ": no such tag folder (tags here: " + tags_in(run) + ")");
    }
    return {folder, tag};
  }
  if (holds_model_states(run)) {
    std::string name = fs::path(run).lexically_normal().filename().string();
    if (name.empty()) {
      name = fs::path(run).lexically_normal().parent_path().filename().string();
    }
    return {run, name};
  }
  std::string latest = join(run, "latest");
  std::ifstream in(latest);
  if (!in) {
    // claims_deepspeed saw `latest` as a file: it cannot be opened (its
    // permissions), or it went away since.
    fail(latest, std::string("cannot be read (") + std::strerror(errno) +
                     "): give --tag TAG (tags here: " + tags_in(run) + ")");
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string named = text.str().substr(0, 4096);
  named.erase(named.find_last_not_of(" \t\r\n") + 1);  // npos + 1 == 0
  named.erase(0, named.find_first_not_of(" \t\r\n") == std::string::npos
                     ? named.size()
                     : named.find_first_not_of(" \t\r\n"));
  if (named.empty()) {
    fail(latest, "is empty: give --tag (tags here: " + tags_in(run) + ")");
  }
  check_tag_name(latest, named);
  std::string folder = join(run, named);
  if (!is_dir(folder)) {
    fail(latest, "names tag " + quoted_name(named) + ", but " + folder +
                     " is no folder (tags here: " + tags_in(run) + ")");
  }
  return {folder, named};
}

namespace {

int64_t rank_number(const std::string& where, const std::string& digits) {
  if (digits.size() > 9) {
    fail(where, "rank " + digits + " is past any world size");
  }
  return std::stoll(digits);
}

}  // namespace

TagFiles classify(const std::string& folder) {
  // RE2, as the rest of the tool: std::regex trips GCC 12's
  // maybe-uninitialized warning in sanitizer builds.
  static const RE2 optim(R"((bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt)");
  static const RE2 model3(R"(zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt)");
  static const RE2 model12(R"(mp_rank_(\d+)_model_states\.pt)");
  static const RE2 expert(
      R"((expp_rank_\d+_mp_rank_\d+_optim_states|layer_\d+_expert_\d+_mp_rank_\d+_model_states)\.pt)");
  static const RE2 layer(R"(layer_\d+.*_model_states\.pt)");
  TagFiles files;
  bool plain_prefix = false;
  for (const std::string& name : names_in(folder)) {
    std::string where = join(folder, name);
    if (name == "offloaded_tensors") {
      fail(where, "NVMe-offloaded optimizer partitions (ZeRO-3 offload_optimizer to nvme) are "
                  "not supported yet: their fp32 masters are not in the rank files");
    }
    if (RE2::FullMatch(name, expert)) {
      fail(where, "MoE expert files are not supported yet");
    }
    if (RE2::FullMatch(name, layer)) {
      fail(where, "pipeline parallelism (layer files) is not supported yet");
    }
    std::string bf16;
    std::string rank;
    std::string mp;
    if (RE2::FullMatch(name, optim, &bf16, &rank, &mp)) {
      (bf16.empty() ? plain_prefix : files.bf16_prefix) = true;
      files.optim.push_back({rank_number(where, rank), name});
    } else if (RE2::FullMatch(name, model3, &rank, &mp)) {
      files.models3.push_back({rank_number(where, rank), name});
    } else if (RE2::FullMatch(name, model12, &mp)) {
      files.model12 = files.model12 || mp == "00";
    } else {
      continue;
    }
    if (mp != "00") {
      fail(where, "tensor or pipeline parallelism (mp_rank " + mp +
                      ") is not supported yet: only mp_rank 00 is read");
    }
  }
  if (files.bf16_prefix && plain_prefix) {
    fail(folder, "both bf16_zero_pp_rank_* and zero_pp_rank_* optimizer files: files of two "
                 "runs in one tag folder");
  }
  auto by_rank = [](const RankFile& a, const RankFile& b) { return a.rank < b.rank; };
  std::sort(files.optim.begin(), files.optim.end(), by_rank);
  std::sort(files.models3.begin(), files.models3.end(), by_rank);
  if (files.optim.empty() && is_dir(join(folder, "zero"))) {
    fail(join(folder, "zero"), "a universal checkpoint (ds_to_universal.py: one folder per "
                               "parameter) is not supported yet: convert the tag it was made from");
  }
  if (files.optim.empty()) {
    fail(folder, "no *_optim_states.pt files: the fp32 masters of a ZeRO or BF16_Optimizer run "
                 "are there (a run without a ZeRO optimizer has them in mp_rank_00_model_states.pt: "
                 "give that file)");
  }
  return files;
}

void check_ranks(const std::string& folder, const std::vector<RankFile>& files, int64_t world,
                 const std::string& expected_name, const std::string& said_by) {
  std::vector<bool> seen(static_cast<size_t>(world), false);
  for (const RankFile& file : files) {
    if (file.rank >= world) {
      fail(join(folder, file.name), "an extra rank: " + said_by + " says " +
                                        std::to_string(world) + " ranks (0 to " +
                                        std::to_string(world - 1) +
                                        "); a stale file from another run?");
    }
    seen[static_cast<size_t>(file.rank)] = true;
  }
  for (int64_t rank = 0; rank < world; ++rank) {
    if (!seen[static_cast<size_t>(rank)]) {
      std::string name = expected_name;
      name.replace(name.find("RANK"), 4, std::to_string(rank));
      fail(folder, "rank " + std::to_string(rank) + " is missing: no " + name + ", and " +
                       said_by + " says " + std::to_string(world) + " ranks");
    }
  }
}

}  // namespace ckpt::deepspeed
