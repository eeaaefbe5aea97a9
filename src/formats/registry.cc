// The table of input formats and the one entry point that reads through it.
// `read_checkpoint` maps the file and asks each format's `sniff` in table
// order, like bloaty's TryOpen… chain and mold's filetype.cc; the first that
// claims the file reads it. A file no format claims is refused with the
// formats tried. Order matters where two formats could claim one file: a
// zip archive is tried first, as torch.load does; safetensors, which has no
// magic, last.
#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/source.h"
#include "formats/torch_storage_id.h"

namespace ckpt {

extern const SourceFormat k_torch_zip;     // torch_zip.cc
extern const SourceFormat k_torch_legacy;  // torch_legacy.cc
extern const SourceFormat k_safetensors;   // safetensors.cc

const std::vector<SourceFormat>& source_formats() {
  static const std::vector<SourceFormat> formats = {k_torch_zip, k_torch_legacy,
                                                      k_safetensors};
  return formats;
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

// "neither a zip archive nor a torch.save legacy file", from the table.
std::string formats_tried() {
  const std::vector<SourceFormat>& formats = source_formats();
  if (formats.size() == 2) {
    return std::string("neither ") + formats[0].described + " nor " + formats[1].described;
  }
  std::string tried = "none of ";
  for (size_t i = 0; i < formats.size(); ++i) {
    tried += (i == 0 ? "" : i + 1 == formats.size() ? " or " : ", ") +
             std::string(formats[i].described);
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
        throw Error(located(ckpt.path + ":" + ckpt.pickle_record, e));
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

}  // namespace

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint ckpt;
  ckpt.path = path;
  ckpt.files.push_back(MappedFile::open(path));
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
