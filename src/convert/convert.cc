// This file runs a conversion end to end (docs/architecture.md, "The
// pipeline"): read the checkpoint, pick what to write, rewrite keys and
// locations, refuse globals that would run code, encode, write to a
// temporary file, verify, rename.
#include "ckpt/convert.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/location.h"
#include "ckpt/sink.h"
#include "ckpt/tensor.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

bool exists(const std::string& path) {
  struct stat s {};
  return ::lstat(path.c_str(), &s) == 0;
}

bool is_folder(const std::string& path) {
  struct stat s {};
  return ::stat(path.c_str(), &s) == 0 && S_ISDIR(s.st_mode);
}

// OUT, or OUT/<name of IN> when OUT is an existing folder (as `cp` does).
// An HF sharded checkpoint, IN a folder or its `*.json` index, is one torch
// file: `<folder>.pth`, `<index name up to its first dot>.pth`
// (`model.safetensors.index.json` → `model.pth`).
std::string output_path(const ConvertOptions& options) {
  if (options.output.empty() || !is_folder(options.output)) {
    return options.output;
  }
  std::string name = options.input;
  while (name.size() > 1 && name.back() == '/') {
    name.pop_back();
  }
  name = name.substr(name.rfind('/') + 1);  // npos + 1 == 0
  if (is_folder(options.input)) {
    name += ".pth";
  } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) {
    name = name.substr(0, name.find('.')) + ".pth";
  }
  std::string folder = options.output;
  return folder + (folder.back() == '/' ? "" : "/") + name;
}

// The output folder of a sink that writes one (`--max-shard-size`), made
// when it is not there yet; removed again when the conversion fails before
// its files are committed (the temporary files are gone by then, so it is
// empty), so that a failed run leaves nothing behind.
class OutputFolder {
public:
  explicit OutputFolder(const std::string& folder) : m_folder(folder) {
    if (::mkdir(folder.c_str(), 0777) == 0) {
      m_made = true;
    } else if (errno != EEXIST) {
      throw Error(folder + ": cannot make the output folder: " + std::strerror(errno));
    }
  }
  ~OutputFolder() {
    if (m_made && !m_kept) {
      ::rmdir(m_folder.c_str());
    }
  }
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;
  void keep() { m_kept = true; }

private:
  std::string m_folder;
  bool m_made = false;
  bool m_kept = false;
};

// OUT is a file that is not IN and, without --force, not there yet; for a
// sink that writes a folder (`--max-shard-size`), a folder or nothing yet
// (made when written; the sink refuses the shards already in it).
void check_paths(const ConvertOptions& options, const std::string& output, bool folder) {
  if (output.empty()) {
    if (!options.dry_run) {
      throw Error("no OUT given (only --dry-run goes without one)", ExitStatus::k_usage);
    }
    return;
  }
  if (folder) {
    if (exists(output) && !is_folder(output)) {
      throw Error(output + ": refusing to write shards: it is a file, and --max-shard-size "
                  "makes OUT a folder", ExitStatus::k_usage);
    }
    return;
  }
  if (options.input == output || same_file(options.input, output)) {
    throw Error(options.input + ": refusing to convert: OUT '" + output +
                "' is the same file (the input is never modified)", ExitStatus::k_usage);
  }
  if (is_folder(output)) {
    throw Error(output + ": refusing to overwrite: it is a folder", ExitStatus::k_usage);
  }
  if (!options.dry_run && !options.force && exists(output)) {
    throw Error(output + ": refusing to overwrite: the file exists (use --force)",
                ExitStatus::k_usage);
  }
}

// What the rules did beyond their counts (rewrite.h's review_rules): notes,
// warnings, and the rules that matched no key as an error with
// --require-match. Then two hints about the input itself.
void review_rewrite(const ConvertOptions& options, const Node* root, size_t state_dicts,
                    ConvertReport& report) {
  RuleReview review = review_rules(options.rules, report.rewrite);
  report.rule_notes = review.notes;
  report.warnings.insert(report.warnings.end(), review.warnings.begin(), review.warnings.end());
  if (options.require_match && !review.unmatched.empty()) {
    std::string unmatched;
    for (const std::string& what : review.unmatched) {
      unmatched += (unmatched.empty() ? "" : "\n") + what + " (--require-match)";
    }
    throw FormatError(unmatched);
  }
  if (state_dicts == 0) {
    report.warnings.push_back(
        "no state dict found: nothing was renamed (the file is written as it was read, its "
        "storages retagged); `ckpt-convert inspect` shows what it holds");
    return;
  }
  bool lightning_preset = false;
  for (const Rule& rule : options.rules.rules()) {
    lightning_preset = lightning_preset || rule.origin == "preset lightning";
  }
  bool model_prefix_left = std::any_of(
      report.rewrite.mapping.begin(), report.rewrite.mapping.end(), [](const KeyMapping& m) {
        return m.new_key && (m.new_key->rfind("model.", 0) == 0 ||
                             m.new_key->rfind("_forward_module.", 0) == 0);
      });
  if (!lightning_preset && model_prefix_left && root->kind == NodeKind::k_dict &&
      dict_get(root, "pytorch-lightning_version") != nullptr) {
    report.warnings.push_back(
        "a PyTorch Lightning checkpoint: its keys keep the LightningModule's attribute "
        "prefix ('model.'); --preset lightning strips it");
  }
}

// Refuses a whole pickled model (`torch.save(model)`) at `root` by name,
// saying how to get its weights: its class is the first global that the
// output may not hold, and naming it alone would not tell what to do.
void refuse_pickled_module(Node* root) {
  if (std::optional<PickledModule> model = find_pickled_module(root)) {
    throw FormatError("a whole pickled model (" + model->module + "." + model->name + " at " +
                      model->path + "): loading it in Python needs its class's code; use "
                      "--extract to write its state dict (the keys model.state_dict() gives)");
  }
}

// The top-level keys of `root` that the state dict `selected` is not under
// (an optimizer, the epoch): what a format that holds only the state dict
// leaves out. None when `selected` is `root`.
std::vector<std::string> keys_left_out(const Node* root, const Node* selected) {
  std::vector<std::string> keys;
  if (root == selected || root->kind != NodeKind::k_dict) {
    return keys;
  }
  for (const NodeEntry& entry : root->entries) {
    if (entry.second != selected) {
      keys.push_back(entry.first->is_str() ? entry.first->text.str() : "(a key that is no str)");
    }
  }
  return keys;
}

// The conversion into the file `output` (OUT, or OUT/<name of IN> when OUT
// is a folder).
void convert_into(const ConvertOptions& options, const std::string& output, ConvertReport& report) {
  Clock::time_point start = Clock::now();
  report.input = options.input;
  report.output = output;
  report.dry_run = options.dry_run;
  report.rules = options.rules.rules();
  const SinkFormat& format = choose_sink(output, options.format,
                                         options.sink.max_shard_size > 0);
  check_paths(options, output, format.writes_folder);
  report.output_format = format.name;
  if (options.sink.dtype) {
    report.dtype = dtype_name(*options.sink.dtype);
  }
  if (options.verify && !options.dry_run) {
    require_device(options.device);
  }

  Clock::time_point stage = Clock::now();
  Checkpoint input = read_checkpoint(options.input, options.read);
  report.format = format_name(input);
  report.warnings = input.warnings;
  report.globals = list_globals(input.graph.root);
  report.seconds.read = seconds_since(stage);
  spdlog::debug("read {}: {} checkpoint, {} tensors in {} storages, {:.3f} s", options.input,
                report.format, input.tensors.size(), input.graph.storages().size(),
                report.seconds.read);

  std::string where = options.input + ":" + input.pickle_record;
  try {
    stage = Clock::now();
    Node* root = input.graph.root;
    if (options.extract || format.state_dict_only) {
      root = find_model_state_dict(input.graph, options.extract_key);
      if (format.state_dict_only) {
        report.left_out = keys_left_out(input.graph.root, root);
      }
    }
    std::vector<StateDictRef> state_dicts = find_state_dicts(root);
    report.rewrite = rewrite_keys(input.graph, state_dicts, options.rules);
    if (spdlog::should_log(spdlog::level::trace)) {
      for (const KeyMapping& m : report.rewrite.mapping) {
        spdlog::trace("{}: {} -> {}", m.state_dict, m.old_key, m.new_key ? *m.new_key : "(dropped)");
      }
    }
    review_rewrite(options, input.graph.root, state_dicts.size(), report);
    if (options.location != "keep") {
      set_locations(input.graph, options.location);
    }
    // Rewriting adds no global (only keys and location strings), so the
    // output's globals are among the input's: walk the graph again only if
    // the input has one the output may not keep (--extract or --drop may
    // have left it behind).
    // A format without pickle holds no global (its sink refuses every value
    // that is not a tensor).
    if (!format.state_dict_only && has_refused_global(report.globals, options.allowed_globals)) {
      if (!options.extract) {
        refuse_pickled_module(root);
      }
      check_output_globals(root, options.allowed_globals);
    }
    // Renaming keys leaves the tensors and their order as they were; only
    // --extract and dropped keys change which are reachable.
    std::vector<TensorRef> tensors = root == input.graph.root && report.rewrite.dropped == 0
                                         ? std::move(input.tensors)
                                         : tensors_reachable(root, input.tensors.size());
    report.tensors = tensors.size();
    report.seconds.rewrite = seconds_since(stage);
    spdlog::debug("rewrote {} state dict(s): {} renamed, {} dropped, {} unchanged, {:.3f} s",
                  state_dicts.size(), report.rewrite.renamed, report.rewrite.dropped,
                  report.rewrite.unchanged, report.seconds.rewrite);
    std::unique_ptr<Sink> sink = format.make();
    WriteRequest request{root,   &tensors,      input.pickle_bytes, output,
                         options.input, input.storage_records, options.sink, options.progress};
    request.options.replace = options.force;
    request.verified = options.verify;
    request.graph = &input.graph;
    // What the writer and verification read of the files a consolidated
    // state dict is made of (a ZeRO or DCP run): see proven_reads below.
    ReadLog source_reads;
    if ((!input.piece_sources.empty() || !input.unchecked_sources.empty()) && options.verify) {
      request.source_reads = &source_reads;
    }
    sink->prepare(request);
    if (options.dry_run) {
      report.shards = sink->planned();
      report.seconds.total = seconds_since(start);
      return;
    }

    stage = Clock::now();
    std::optional<OutputFolder> folder;
    if (format.writes_folder) {
      folder.emplace(output);
    }
    OutputFiles files;
    Written written;
    try {
      written = sink->write(request, files);
    } catch (const Error&) {
      if (input.shrank()) {  // the copy ran out of input: not a write failure
        throw truncated_while_read(options.input);
      }
      throw;
    }
    report.tensors = written.tensors;
    report.storages = written.storages;
    report.storage_bytes = written.storage_bytes;
    report.bytes_written = written.bytes;
    report.tied = written.tied;
    report.shards = written.shards;
    report.seconds.write = seconds_since(stage);
    // What the writer read of a ZeRO run's records (proven by their CRC-32s
    // after verification) or of a DCP run's files (which carry none) lets
    // verification reread only the output (VerifySource::proven).
    ReadLog proven_reads;
    if (request.source_reads != nullptr) {
      std::vector<PieceSource> sources = input.piece_sources;
      for (const MappedFile* file : input.unchecked_sources) {
        sources.push_back({file, file->path(), 0, file->bytes().size, 0});
      }
      proven_reads = reads_inside(source_reads, sources);
      request.proven_reads = &proven_reads;
    }
    // Written: the input's object graph is no longer needed, only its
    // storages' bytes (a sink's verification reads no node). Freed now, its
    // memory serves the verification's graph of the output (50,000 small
    // tensors: peak RSS 334 -> 219 MB).
    input.graph.release_nodes();
    request.root = nullptr;
    spdlog::debug("wrote {} bytes to {}, {:.3f} s", report.bytes_written, output,
                  report.seconds.write);
    if (options.verify) {
      stage = Clock::now();
      report.verified = sink->verify(request, files, options.device);
      // Consolidated storages (a ZeRO run) hold what was read of their
      // pieces; the records those come from are proven whole by their CRC-32s.
      check_piece_sources(input.piece_sources, std::move(source_reads));
      report.seconds.verify = seconds_since(stage);
      spdlog::debug("verified {} tensors on {}, {:.3f} s", report.verified->tensors,
                    options.device, report.seconds.verify);
    }
    if (input.shrank()) {
      // Verified against the CRC-32s of the input's records, the output may
      // be whole; but another process changed the input meanwhile: say so.
      throw truncated_while_read(options.input);
    }
    files.commit();
    if (folder) {
      folder->keep();
    }
    sink->after_commit(request);
    report.written = true;
    report.seconds.total = seconds_since(start);
  } catch (const FormatError& e) {
    throw in_file(where, e);
  }
}


}  // namespace

void convert(const ConvertOptions& options, ConvertReport& report) {
  check_location_option(options.location);
  // A folder of shards is OUT itself; a file goes into OUT when it is a folder.
  convert_into(options, options.sink.max_shard_size > 0 ? options.output : output_path(options),
               report);
}

}  // namespace ckpt
