// The inputs of a batch: files, directories walked for checkpoint names, and
// manifests (`@FILE`), each mapped to the place it takes under OUTDIR; and
// the stable split of that list into shards (`--shard I/N`). A folder that
// holds an HF shard index, and a run folder a folder format claims (a
// DeepSpeed run, a DCP checkpoint), is one input (the reader takes the folder
// as one state dict), and its files are not taken one by one; each input's place
// under OUTDIR is its output's name, which follows the format written
// (`batch_output_name`), so that two inputs that would write one output are
// found before anything is done.
//
// A shard is chosen by a hash of the path under OUTDIR, not by position in
// the list: machines that mount the zoo in different places agree, and a
// file added to the zoo does not move every other file to another shard.
#include <fnmatch.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "ckpt/batch.h"
#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/source.h"
#include "batch_internal.h"

namespace ckpt {
namespace {

namespace fs = std::filesystem;

std::string trim(const std::string& text) {
  size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string::npos) {
    return "";
  }
  size_t end = text.find_last_not_of(" \t\r");
  return text.substr(begin, end - begin + 1);
}

bool matches_any(const std::vector<std::string>& globs, const std::string& name,
                 const std::string& relative) {
  for (const std::string& glob : globs) {
    bool by_path = glob.find('/') != std::string::npos;
    if (::fnmatch(glob.c_str(), by_path ? relative.c_str() : name.c_str(),
                  by_path ? FNM_PATHNAME : 0) == 0) {
      return true;
    }
  }
  return false;
}

bool ends_with(const std::string& text, const std::string& end) {
  return text.size() >= end.size() && text.compare(text.size() - end.size(), end.size(), end) == 0;
}

// `relative` without the extension of its last component: the checkpoint one
// it ends with, else the last one (none for a name like `.hidden`).
std::string without_extension(const std::string& relative) {
  for (const char* known : {".pth.tar", ".safetensors", ".pth", ".pt", ".bin", ".ckpt"}) {
    if (ends_with(relative, known) && relative.size() > std::strlen(known) &&
        relative[relative.size() - std::strlen(known) - 1] != '/') {
      return relative.substr(0, relative.size() - std::strlen(known));
    }
  }
  std::string extension = fs::path(relative).extension().string();
  return relative.substr(0, relative.size() - extension.size());
}

// The name a folder named `path` has (`zoo/m/` and `zoo/m/.` are `m`).
std::string folder_name(const std::string& path) {
  fs::path normal = fs::path(path).lexically_normal();
  if (!normal.empty() && normal.filename().empty()) {
    normal = normal.parent_path();
  }
  std::string name = normal.filename().string();
  if (name.empty() || name == "." || name == "..") {
    std::error_code ec;
    fs::path absolute = fs::absolute(path, ec).lexically_normal();
    name = (absolute.filename().empty() ? absolute.parent_path() : absolute).filename().string();
  }
  return name;
}

struct FileId {
  dev_t device = 0;
  ino_t inode = 0;
  bool operator<(const FileId& other) const {
    return device != other.device ? device < other.device : inode < other.inode;
  }
};

class Collector {
public:
  Collector(const std::vector<std::string>& globs, const std::string& skip_dir,
            const SkipCallback& on_skip, const BatchNaming& naming)
      : m_globs(globs),
        m_no_match("matches none of " + join_globs(globs)),
        m_on_skip(on_skip),
        m_naming(naming) {
    struct stat info {};
    if (!skip_dir.empty() && ::stat(skip_dir.c_str(), &info) == 0) {
      m_skip = FileId{info.st_dev, info.st_ino};
    }
  }

  // `path` named directly (command line: `missing_is_error`) or by a
  // manifest. A file goes to `relative`; a directory's files go under
  // `prefix` (empty: OUTDIR itself).
  void add_path(const std::string& path, const std::string& relative, const std::string& prefix,
                bool missing_is_error) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) {
      std::string why = path + ": cannot read: " + std::strerror(errno);
      if (missing_is_error) {
        throw Error(why);
      }
      BatchInput input;
      input.input = path;
      input.relative = batch_output_name(relative, false, m_naming);
      input.error = why;
      m_inputs.push_back(std::move(input));
      return;
    }
    if (S_ISDIR(info.st_mode) && one_input_folder(path)) {
      // A named variable, not a temporary: GCC 12 at -O3 warns that a
      // temporary empty optional<string> "may be used uninitialized".
      const std::optional<std::string> named_directly;
      add_folder(path, relative.empty() || relative == "." ? folder_name(path) : relative, info,
                 named_directly);
    } else if (S_ISDIR(info.st_mode)) {
      walk(path, prefix);
    } else {
      add_file(path, relative, info);
    }
  }

  void add_manifest(const std::string& name) {
    std::ifstream file;
    std::istream* in = &std::cin;
    std::string folder;
    std::string shown = name == "-" ? "(standard input)" : name;
    if (name != "-") {
      file.open(name);
      if (!file) {
        throw Error(name + ": cannot read the manifest: " + std::strerror(errno));
      }
      in = &file;
      folder = fs::path(name).parent_path().string();
    }
    std::string line;
    while (std::getline(*in, line)) {
      std::string entry = trim(line);
      if (entry.empty() || entry[0] == '#') {
        continue;
      }
      fs::path written(entry);
      fs::path normal = written.lexically_normal();
      if (!normal.empty() && normal.filename().empty()) {
        normal = normal.parent_path();  // `dir/` is `dir`
      }
      bool escapes = written.is_absolute() || normal.empty() || *normal.begin() == "..";
      std::string relative = escapes ? written.filename().string() : normal.generic_string();
      std::string prefix = escapes || normal == "." ? "" : relative;
      std::string path =
          written.is_absolute() || folder.empty() ? entry : (fs::path(folder) / written).string();
      add_path(path, relative, prefix, false);
    }
    if (in->bad()) {
      throw Error(shown + ": cannot read the manifest");
    }
  }

  std::vector<BatchInput> finish() {
    std::sort(m_inputs.begin(), m_inputs.end(), [](const BatchInput& a, const BatchInput& b) {
      return a.relative != b.relative ? a.relative < b.relative : a.input < b.input;
    });
    std::string collisions;
    for (size_t i = 1; i < m_inputs.size(); ++i) {
      if (m_inputs[i].relative == m_inputs[i - 1].relative) {
        collisions += (collisions.empty() ? "" : "\n") + m_inputs[i - 1].input + " and " +
                      m_inputs[i].input + " would both be written to " + m_inputs[i].relative;
      }
    }
    if (!collisions.empty()) {
      throw Error(collisions, ExitStatus::k_usage);
    }
    return std::move(m_inputs);
  }

private:
  void walk(const std::string& root, const std::string& prefix) {
    struct stat root_info {};
    if (m_skip && ::stat(root.c_str(), &root_info) == 0 && root_info.st_dev == m_skip->device &&
        root_info.st_ino == m_skip->inode) {
      throw Error(root + ": is the output folder too: the outputs would replace the inputs",
                  ExitStatus::k_usage);
    }
    std::error_code ec;
    fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
    if (ec) {
      throw Error(root + ": cannot list: " + ec.message());
    }
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) {
        throw Error(root + ": cannot list: " + ec.message());
      }
      const fs::directory_entry& entry = *it;
      std::string path = entry.path().string();
      struct stat link {};
      struct stat info {};
      if (::lstat(path.c_str(), &link) != 0) {
        skip(path, std::string("gone while listed: ") + std::strerror(errno));
        continue;
      }
      if (::stat(path.c_str(), &info) != 0) {
        skip(path, S_ISLNK(link.st_mode) ? "a dangling symlink"
                                         : std::string("cannot stat: ") + std::strerror(errno));
        continue;
      }
      if (S_ISDIR(info.st_mode)) {
        if (m_skip && info.st_dev == m_skip->device && info.st_ino == m_skip->inode) {
          it.disable_recursion_pending();
          skip(path, "the output folder");
        } else if (S_ISLNK(link.st_mode)) {
          skip(path, "a symlink to a folder (not followed)");
        } else if (entry.path().filename() == k_records_folder) {
          it.disable_recursion_pending();
          skip(path, "the sidecars of an output folder");
        } else if (one_input_folder(path)) {
          it.disable_recursion_pending();
          std::string relative = entry.path().lexically_relative(root).generic_string();
          add_folder(path, prefix.empty() ? relative : prefix + "/" + relative, info, relative);
        }
        continue;
      }
      if (!S_ISREG(info.st_mode)) {
        skip(path, "not a regular file");
        continue;
      }
      std::string relative = entry.path().lexically_relative(root).generic_string();
      if (!matches_any(m_globs, entry.path().filename().string(), relative)) {
        skip(path, m_no_match);
        continue;
      }
      add_file(path, prefix.empty() ? relative : prefix + "/" + relative, info);
    }
    if (ec) {
      throw Error(root + ": cannot list: " + ec.message());
    }
  }

  void add_file(const std::string& path, const std::string& relative, const struct stat& info) {
    add_input(path, relative, info, static_cast<uint64_t>(info.st_size), false);
  }

  // A folder read as one input: HF shards (an index in it), or a run folder
  // (a DeepSpeed run, a DCP checkpoint).
  static bool one_input_folder(const std::string& path) {
    return holds_hf_index(path) || batch_detail::is_run_folder(path);
  }

  // A shard folder: one input, counted at the size of the files in it. Met
  // by a walk (`below_root`: its path below the folder walked), it is taken
  // when the globs match one of its files (the defaults match every shard);
  // named directly, always. The files the globs match, and the folders in it
  // (not walked: an output folder of shards would hold theirs), are told to
  // `on_skip`. A run folder is always taken, counted at every file under it:
  // its format claimed it by its files, whose names no glob is meant for.
  void add_folder(const std::string& path, const std::string& relative, const struct stat& info,
                  const std::optional<std::string>& below_root) {
    if (!holds_hf_index(path)) {
      add_run_folder(path, relative, info);
      return;
    }
    uint64_t size = 0;
    std::vector<std::string> matched;
    std::vector<std::string> folders;
    std::error_code ec;
    for (fs::directory_iterator it(path, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      std::error_code ignored;
      if (it->is_directory(ignored)) {
        folders.push_back(it->path().string());
        continue;
      }
      if (!it->is_regular_file(ignored)) {
        continue;
      }
      size += it->file_size(ignored);
      std::string name = it->path().filename().string();
      if (matches_any(m_globs, name, below_root.value_or(relative) + "/" + name)) {
        matched.push_back(it->path().string());
      }
    }
    if (below_root && matched.empty()) {
      skip(path, "an HF shard folder whose files match none of " + join_globs(m_globs));
      return;
    }
    for (const std::string& file : matched) {
      skip(file, "in the HF shard folder " + path + " (converted as one input)");
    }
    for (const std::string& folder : folders) {
      skip(folder, "a folder in the HF shard folder " + path + " (not walked)");
    }
    add_input(path, relative, info, size, true);
  }

  void add_run_folder(const std::string& path, const std::string& relative,
                      const struct stat& info) {
    uint64_t size = 0;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code ignored;
      if (it->is_regular_file(ignored)) {
        size += it->file_size(ignored);
      }
    }
    add_input(path, relative, info, size, true);
  }

  void add_input(const std::string& path, const std::string& relative, const struct stat& info,
                 uint64_t size, bool folder) {
    std::string output = batch_output_name(relative, folder, m_naming);
    // The same file reached twice for the same place is one input.
    if (!m_seen.insert({FileId{info.st_dev, info.st_ino}, output}).second) {
      skip(path, "already listed for " + output);
      return;
    }
    BatchInput input;
    input.input = path;
    input.relative = output;
    input.size = size;
    input.folder = folder;
    m_inputs.push_back(std::move(input));
  }

  void skip(const std::string& path, const std::string& why) const {
    if (m_on_skip) {
      m_on_skip(path, why);
    }
  }

  std::vector<std::string> m_globs;
  std::string m_no_match;  // the reason a file is passed over for its name
  SkipCallback m_on_skip;
  BatchNaming m_naming;
  std::optional<FileId> m_skip;
  std::set<std::pair<FileId, std::string>> m_seen;
  std::vector<BatchInput> m_inputs;
};

}  // namespace

Shard parse_shard(const std::string& text) {
  auto fail = [&](const std::string& why) {
    return Error("--shard '" + text + "': " + why, ExitStatus::k_usage);
  };
  size_t slash = text.find('/');
  auto number = [&](const std::string& part) -> uint32_t {
    if (part.empty() || part.size() > 9 ||
        part.find_first_not_of("0123456789") != std::string::npos) {
      throw fail("expected I/N, two numbers such as 0/4");
    }
    return static_cast<uint32_t>(std::stoul(part));
  };
  if (slash == std::string::npos) {
    throw fail("expected I/N, two numbers such as 0/4");
  }
  Shard shard{number(text.substr(0, slash)), number(text.substr(slash + 1))};
  if (shard.count == 0) {
    throw fail("N must be at least 1");
  }
  if (shard.index >= shard.count) {
    throw fail("I must be 0 to " + std::to_string(shard.count - 1) +
               " (shards count from 0, as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX do)");
  }
  return shard;
}

uint64_t parse_byte_size(const std::string& option, const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // As coreutils (`sort -S 512M`, `du`) and huggingface_hub (`max_shard_size="5GB"`) read
  // them: a bare letter and `iB` are powers of 1024, `B` after the letter powers of 1000.
  static const std::map<std::string, double> k_units = {
      {"", 1},        {"b", 1},
      {"k", 0x1p10},  {"kib", 0x1p10}, {"kb", 1e3},
      {"m", 0x1p20},  {"mib", 0x1p20}, {"mb", 1e6},
      {"g", 0x1p30},  {"gib", 0x1p30}, {"gb", 1e9},
      {"t", 0x1p40},  {"tib", 0x1p40}, {"tb", 1e12},
  };
  auto found = k_units.find(unit);
  if (used == 0 || found == k_units.end() || !(value > 0) || !std::isfinite(value) ||
      value * found->second >= 0x1p63) {
    throw Error(option + " '" + text +
                    "': expected a size such as 512M, 8G, 1.5GiB (powers of 1024) or 5GB "
                    "(powers of 1000)",
                ExitStatus::k_usage);
  }
  return static_cast<uint64_t>(value * found->second);
}

bool in_shard(const std::string& relative, const Shard& shard) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a, 64 bits
  for (unsigned char c : relative) {
    hash = (hash ^ c) * 0x100000001b3ull;
  }
  // FNV's low bits mix poorly: finish with splitmix64's avalanche.
  hash ^= hash >> 30;
  hash *= 0xbf58476d1ce4e5b9ull;
  hash ^= hash >> 27;
  hash *= 0x94d049bb133111ebull;
  hash ^= hash >> 31;
  return hash % shard.count == shard.index;
}

std::vector<std::string> default_batch_globs() {
  // `*.pth.tar`: pytorch/examples' save_checkpoint, which fnmatch's `*.pth` does not match.
  return {"*.pth", "*.pth.tar", "*.pt", "*.bin", "*.ckpt", "*.safetensors"};
}

std::string batch_output_name(const std::string& relative, bool folder, const BatchNaming& naming) {
  std::string stem = folder ? relative : without_extension(relative);
  if (naming.sharded) {
    return stem;
  }
  if (naming.format == "safetensors") {
    return stem + ".safetensors";
  }
  // pt: the names zoo scripts load keep working; only a safetensors name would lie.
  return folder || ends_with(relative, ".safetensors") ? stem + ".pth" : relative;
}

std::string join_globs(const std::vector<std::string>& globs) {
  std::string out;
  for (const std::string& glob : globs) {
    out += (out.empty() ? "" : " ") + glob;
  }
  return out;
}

std::vector<BatchInput> collect_batch_inputs(const std::vector<std::string>& sources,
                                             const std::vector<std::string>& globs,
                                             const std::string& skip_dir,
                                             const SkipCallback& on_skip,
                                             const BatchNaming& naming) {
  Collector collector(globs, skip_dir, on_skip, naming);
  for (const std::string& source : sources) {
    if (source.size() > 1 && source[0] == '@') {
      collector.add_manifest(source.substr(1));
    } else {
      collector.add_path(source, fs::path(source).filename().string(), "", true);
    }
  }
  return collector.finish();
}

namespace batch_detail {

bool is_run_folder(const std::string& folder) {
  try {
    return folder_format(folder, ReadOptions{}) != nullptr;
  } catch (const Error&) {
    return true;  // recognised and refused: converting it says why
  }
}

}  // namespace batch_detail

}  // namespace ckpt
