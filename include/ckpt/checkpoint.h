// Opening a checkpoint: the container (zip or legacy), the pickle decoded into
// a graph, and every storage bound to its bytes in the mapped file.
#pragma once

#include <string>
#include <vector>

#include "ckpt/graph.h"
#include "ckpt/mapped_file.h"
#include "ckpt/tensor.h"

namespace ckpt {

enum class ContainerFormat { k_zip, k_legacy };

struct Checkpoint {
  std::string path;
  ContainerFormat format = ContainerFormat::k_zip;
  MappedFile file;                   // the mapping, when read from a path
  ByteSpan bytes;                    // the whole file
  Graph graph;
  std::string archive_name;          // zip: the folder every record is in
  std::string pickle_record;         // where the pickle is, for messages
  uint64_t pickle_bytes = 0;
  std::vector<std::string> records;  // zip: record names without the folder
  std::string version;               // zip: the `version` record, trimmed
  std::vector<TensorRef> tensors;    // every tensor in the graph, in pickle order
};

// Opens and decodes `path`. Nothing in it is executed. Throws `Error` naming
// the file (and record or byte offset) and the cause for anything that is not
// a readable torch.save checkpoint: empty, text, tar-format (torch < 0.4),
// TorchScript archives, truncation, missing or short storage records.
Checkpoint read_checkpoint(const std::string& path);

// The same for a file already in memory (`bytes` must outlive the result);
// `name` stands for the file in messages. Used by the fuzz targets.
Checkpoint read_checkpoint_bytes(const std::string& name, ByteSpan bytes);

// The name of the container format for reports: `zip` or `legacy`.
const char* format_name(ContainerFormat format);

}  // namespace ckpt
