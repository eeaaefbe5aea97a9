// The tables of input and output formats, and the entry points that choose
// through them.
// `read_checkpoint` maps the file and asks each format's `sniff` in table
// order, like bloaty's TryOpen… chain and mold's filetype.cc; the first that
// claims the file reads it. A file no format claims is refused with the
// formats tried. Order matters where two formats could claim one file: a
// zip archive is tried first, as torch.load does; then safetensors, which has
// no magic; the HF index (JSON) last, since the first 8 bytes of JSON text are
// no header length safetensors accepts, while a safetensors file could begin
// with `{"` and name a tensor `weight_map`. A folder is read through the HF
// index in it.
#include <re2/re2.h>
#include <sys/stat.h>

#include "ckpt/cast.h"
#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/sink.h"
#include "ckpt/source.h"
#include "formats/torch_storage_id.h"

namespace ckpt {

extern const SourceFormat k_torch_zip;     // torch_zip.cc
extern const SourceFormat k_deepspeed;     // deepspeed.cc
extern const SourceFormat k_torch_legacy;  // torch_legacy.cc
extern const SourceFormat k_hf_index;      // hf_index.cc
extern const SourceFormat k_safetensors;   // safetensors.cc
extern const SourceFormat k_torch_dcp;     // dcp.cc

const std::vector<SourceFormat>& source_formats() {
  static const std::vector<SourceFormat> formats = {k_torch_zip, k_torch_legacy, k_safetensors,
                                                      k_deepspeed, k_torch_dcp, k_hf_index};
  return formats;
}

extern const SinkFormat k_torch_sink;        // torch_sink.cc
extern const SinkFormat k_safetensors_sink;  // safetensors_sink.cc
extern const SinkFormat k_hf_shards_sink;    // hf_shards_sink.cc
extern const SinkFormat k_pt_shards_sink;    // hf_shards_sink.cc

const std::vector<SinkFormat>& sink_formats() {
  static const std::vector<SinkFormat> formats = {k_torch_sink, k_safetensors_sink,
                                                    k_hf_shards_sink, k_pt_shards_sink};
  return formats;
}

std::optional<CastCheck> cast_check_for(const WriteRequest& request) {
  if (!request.verified || !request.options.dtype) {
    return std::nullopt;
  }
  return reference_cast_check();
}

Dtype written_dtype(const SinkOptions& options, const std::string& name, Dtype dtype) {
  if (!options.dtype || !is_floating_dtype(dtype) || !castable(dtype, *options.dtype)) {
    return dtype;
  }
  for (const Rule& keep : options.keep_dtype) {
    if (RE2::PartialMatch(name, *keep.pattern)) {
      return dtype;
    }
  }
  return *options.dtype;
}

const SinkFormat& choose_sink(const std::string& output, const std::string& format,
                              bool sharded) {
  const std::vector<SinkFormat>& formats = sink_formats();
  if (sharded) {
    if (format == "pt") {
      return k_pt_shards_sink;
    }
    if (!format.empty() && format != "safetensors") {
      throw Error("--format " + format + ": shards are written as safetensors or pt",
                  ExitStatus::k_usage);
    }
    return k_hf_shards_sink;
  }
  if (!format.empty()) {
    std::string names;
    for (const SinkFormat& sink : formats) {
      if (sink.writes_folder) {
        continue;  // chosen by --max-shard-size
      }
      if (format == sink.name) {
        return sink;
      }
      names += (names.empty() ? "" : ", ") + std::string(sink.name);
    }
    throw Error("--format " + format + ": not a format ckpt-convert writes (" + names + ")",
                ExitStatus::k_usage);
  }
  for (const SinkFormat& sink : formats) {
    if (sink.claims(output)) {
      return sink;
    }
  }
  return formats.front();
}

std::string Checkpoint::fact(const std::string& name) const {
  for (const auto& [key, value] : facts) {
    if (key == name) {
      return value;
    }
  }
  return "";
}

bool Checkpoint::shrank() const {
  for (const MappedFile& file : files) {
    if (file.shrank()) {
      return true;
    }
  }
  return false;
}

const char* format_name(const Checkpoint& ckpt) {
  return ckpt.format != nullptr ? ckpt.format->report_name : "";
}

namespace {

// The smallest file any format could be: a safetensors file with the header
// `{}` (8 + 2 bytes); a zip archive takes 22, a legacy file more.
constexpr uint64_t k_smallest_checkpoint = 10;

// "neither a zip archive nor a torch.save legacy file", from the table
// (the formats described in words).
std::string formats_tried() {
  std::vector<const char*> formats;
  for (const SourceFormat& format : source_formats()) {
    if (format.described != nullptr) {
      formats.push_back(format.described);
    }
  }
  if (formats.size() == 2) {
    return std::string("neither ") + formats[0] + " nor " + formats[1];
  }
  std::string tried = "none of ";
  for (size_t i = 0; i < formats.size(); ++i) {
    tried += (i == 0 ? "" : i + 1 == formats.size() ? " or " : ", ") + std::string(formats[i]);
  }
  return tried;
}

void parse(Checkpoint& ckpt) {
  if (ckpt.bytes.size == 0) {
    throw Error(ckpt.path + ": empty file");
  }
  for (const SourceFormat& format : source_formats()) {
    if (format.sniff(ckpt.path, ckpt.bytes)) {
      ckpt.format = &format;
      format.read(ckpt.path, ckpt);
      try {
        ckpt.tensors = tensors_reachable(ckpt.graph.root, ckpt.graph.storages().size());
      } catch (const FormatError& e) {
        throw in_file(ckpt.path + ":" + ckpt.pickle_record, e);
      }
      return;
    }
  }
  std::string why = ckpt.path + ": not a PyTorch checkpoint (" + formats_tried() + ")";
  if (ckpt.bytes.size < k_smallest_checkpoint) {
    why += ": only " + std::to_string(ckpt.bytes.size) +
           (ckpt.bytes.size == 1 ? " byte" : " bytes") + ", too few for any of them";
  }
  throw Error(why);
}

// The HF index of `folder`, which no folder format claims; where there is
// none, the error says so, or what a folder format explains is missing.
std::string hf_index_or_explain(const std::string& folder) {
  try {
    return find_hf_index(folder);
  } catch (const Error&) {
    for (const SourceFormat& format : source_formats()) {
      std::string missing = format.explain_folder != nullptr ? format.explain_folder(folder) : "";
      if (!missing.empty()) {
        throw Error(folder + ": " + missing);
      }
    }
    throw;
  }
}

}  // namespace

const SourceFormat* folder_format(const std::string& path, const ReadOptions& options) {
  for (const SourceFormat& format : source_formats()) {
    if (format.claims_folder != nullptr && format.claims_folder(path, options)) {
      return &format;
    }
  }
  return nullptr;
}

Checkpoint read_checkpoint(const std::string& path, const ReadOptions& options) {
  Checkpoint ckpt;
  ckpt.options = options;
  struct stat info {};
  bool folder = ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
  if (const SourceFormat* format = folder ? folder_format(path, options) : nullptr) {
    ckpt.path = path;
    ckpt.format = format;
    format->read(path, ckpt);
    try {
      ckpt.tensors = tensors_reachable(ckpt.graph.root, ckpt.graph.storages().size());
    } catch (const FormatError& e) {
      throw in_file(path, e);
    }
    return ckpt;
  }
  // A folder no folder format claims is read through the HF index in it,
  // whose absence find_hf_index explains, unless a folder format sees one
  // of its own left incomplete.
  ckpt.path = folder ? hf_index_or_explain(path) : path;
  ckpt.files.push_back(MappedFile::open(ckpt.path));
  ckpt.bytes = ckpt.files.front().bytes();
  parse(ckpt);
  return ckpt;
}

Checkpoint read_checkpoint_bytes(const std::string& name, ByteSpan bytes) {
  Checkpoint ckpt;
  ckpt.path = name;
  ckpt.bytes = bytes;
  parse(ckpt);
  return ckpt;
}

}  // namespace ckpt
