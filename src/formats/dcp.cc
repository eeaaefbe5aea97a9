// The torch Distributed Checkpoint (DCP) reader: a folder holding `.metadata`
// and `__<rank>_<k>.distcp` files (FileSystemWriter, torch 1.13 to 2.x;
// docs/dcp.md). It reads as ONE checkpoint,
// the nested object `dcp_to_torch_save` (torch ≥ 2.3) writes: every tensor
// whole, assembled from its chunks, and every other item decoded, placed by
// `planner_data`.
//
// `.metadata` is decoded by dcp_metadata.cc, running nothing. Each item is a
// slice of a `.distcp` file that `_StorageInfo` locates; every version
// writes it with `torch.save` (§2.3), so the slice is a standalone torch zip
// whose offsets count from the slice's start. A tensor item's zip is read
// for its pickle and record index only (its bytes stay in the file): the
// chunk's bytes become pieces of the full tensor's storage
// (storage_pieces.h), a row block one piece, a 2-D box one piece per row, in
// the full tensor's row-major order, wherever the deduplicating planner put
// them (never inferred from the rank). A bytes item's zip is decoded into
// the graph like any torch.save file, its storages (1.13 saves a nested dict
// of tensors as one bytes item) bound to the `.distcp` file.
//
// Refused, naming the file and the cause: what parse_dcp_metadata refuses
// (code-running globals, chunks that do not cover their tensor or overlap,
// stream transforms), a missing `.distcp`, an item past the end of its file
// (truncated), a slice that is no torch.save zip (the safetensors-in-DCP
// format of torch ≥ 2.8 is named), a chunk whose blob is not the contiguous
// tensor of the chunk's sizes and dtype. Read with a warning: files beside
// `.metadata` that it does not name (a stale rank's `.distcp`, Megatron-Core's
// `common.pt`), which are not read.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/dcp_metadata.h"
#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "ckpt/source.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"
#include "ckpt/zip.h"

namespace ckpt {

extern const SourceFormat k_torch_zip;  // torch_zip.cc

namespace {

std::string join(const std::string& folder, const std::string& name) {
  return folder.empty() || folder.back() == '/' ? folder + name : folder + "/" + name;
}

bool is_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

bool claims_dcp(const std::string& folder, const ReadOptions&) {
  return is_file(join(folder, ".metadata"));
}

// torch.distributed.checkpoint's FileSystemWriter writes `.metadata` last, on
// the coordinator rank, after every rank's `.distcp` files; a copy by
// `cp dir/*` or a glob leaves it out, as a hidden file.
std::string explain_dcp(const std::string& folder) {
  size_t shards = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(folder, ec);
       !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    shards += name.size() > 7 && name.compare(name.size() - 7, 7, ".distcp") == 0;
  }
  if (shards == 0) {
    return "";
  }
  return "a torch Distributed Checkpoint without its `.metadata` (" + std::to_string(shards) +
         (shards == 1 ? " .distcp file" : " .distcp files") +
         " here): the save did not finish (torch writes `.metadata` last), or the copy left the "
         "hidden file out (`cp dir/*` does); copy the whole folder again";
}

bool sniff_none(const std::string&, ByteSpan) { return false; }

// The rank of a FileSystemWriter file name `__<rank>_<k>.distcp`, or -1.
long rank_of(const std::string& file) {
  if (file.compare(0, 2, "__") != 0) {
    return -1;
  }
  char* end = nullptr;
  long rank = std::strtol(file.c_str() + 2, &end, 10);
  return end != file.c_str() + 2 && *end == '_' ? rank : -1;
}

// Where an item's slice starts, for messages: `<file>@<offset>`.
std::string item_where(const std::string& path, const DcpStorageInfo& info) {
  return path + "@" + std::to_string(info.offset);
}

// One run of consecutive elements of the full tensor: `count` elements from
// element `start`, at `file_offset` of `file`.
struct Run {
  uint64_t start;
  uint64_t count;
  const MappedFile* file;
  uint64_t file_offset;
};

class DcpReader {
public:
  DcpReader(const std::string& folder, Checkpoint& ckpt) : m_folder(folder), m_ckpt(ckpt) {}

  void read() {
    std::string metadata_path = join(m_folder, ".metadata");
    m_ckpt.files.push_back(MappedFile::open(metadata_path));
    ByteSpan metadata_bytes = m_ckpt.files.back().bytes();
    m_metadata = parse_dcp_metadata(metadata_bytes, metadata_path);
    m_metadata_path = metadata_path;
    open_files();

    Graph& graph = m_ckpt.graph;
    std::vector<Node*> leaves;
    leaves.reserve(m_metadata.items.size());
    for (const DcpItem& item : m_metadata.items) {
      leaves.push_back(item.is_tensor ? tensor(item) : object(item));
    }
    graph.root = build_dcp_nested(graph, m_metadata, leaves, m_metadata_path);
    m_ckpt.bytes = metadata_bytes;
    m_ckpt.pickle_record = "";
    m_ckpt.pickle_bytes = metadata_bytes.size;
    m_ckpt.storage_records.clear();
    facts();
  }

private:
  // Maps every file `.metadata` names, in rank order; a missing one is refused.
  void open_files() {
    std::vector<std::string> files = m_metadata.files;
    std::sort(files.begin(), files.end(), [](const std::string& a, const std::string& b) {
      return std::make_pair(rank_of(a), a) < std::make_pair(rank_of(b), b);
    });
    for (const std::string& file : files) {
      std::string path = join(m_folder, file);
      if (!is_file(path)) {
        std::string user;
        for (const DcpItem& item : m_metadata.items) {
          bool here = item.is_tensor ? std::any_of(item.chunks.begin(), item.chunks.end(),
                                                   [&](const DcpChunk& c) {
                                                     return c.where.relative_path == file;
                                                   })
                                     : item.where.relative_path == file;
          if (here) {
            user = item.fqn;
            break;
          }
        }
        throw Error(path + ": missing: .metadata stores items there (" + quoted_name(user) +
                    "…), but there is no such file (a rank's files not copied?)");
      }
      m_ckpt.files.push_back(MappedFile::open(path));
      m_files[file] = &m_ckpt.files.back();
      m_ckpt.unchecked_sources.push_back(&m_ckpt.files.back());
    }
    find_unread();
  }

  // The files beside `.metadata` that it does not name: `.distcp` files of
  // another save (a stale rank), and Megatron-Core's `common.pt` and
  // `metadata.json` (its torch_dist format adds them; unconfirmed), none read.
  void find_unread() {
    std::error_code ec;
    for (const std::filesystem::directory_entry& entry :
         std::filesystem::directory_iterator(m_folder, ec)) {
      std::string name = entry.path().filename().string();
      bool distcp = name.size() > 7 && name.compare(name.size() - 7, 7, ".distcp") == 0;
      if ((distcp && m_files.count(name) == 0) || name == "common.pt" ||
          name == "metadata.json") {
        m_unread.push_back(name);
      }
    }
    std::sort(m_unread.begin(), m_unread.end());
    if (!m_unread.empty()) {
      std::string names;
      for (const std::string& name : m_unread) {
        names += (names.empty() ? "" : ", ") + quoted_name(name);
      }
      m_ckpt.warnings.push_back(std::to_string(m_unread.size()) + " file(s) beside " +
                                m_metadata_path + " that it does not name, not read: " + names);
    }
  }

  // The slice `info` locates, checked against its file's size.
  std::pair<const MappedFile*, ByteSpan> slice(const DcpItem& item, const DcpStorageInfo& info) {
    const MappedFile* file = m_files.at(info.relative_path);
    uint64_t size = file->bytes().size;
    if (info.offset > size || info.length > size - info.offset) {
      throw Error(file->path() + ": item " + quoted_name(item.fqn) + " at bytes [" +
                  std::to_string(info.offset) + ", " + std::to_string(info.offset + info.length) +
                  ") runs past the end of the file (" + std::to_string(size) +
                  " bytes): truncated file?");
    }
    return {file, {file->bytes().data + info.offset, info.length}};
  }

  // A slice that is no torch.save zip: what it is, for the error.
  [[noreturn]] void not_a_blob(const MappedFile& file, const DcpItem& item,
                               const DcpStorageInfo& info) {
    std::string where = item_where(file.path(), info) + ": item " + quoted_name(item.fqn);
    ByteSpan whole = file.bytes();
    bool safetensors_file = info.relative_path.size() > 12 &&
                            info.relative_path.compare(info.relative_path.size() - 12, 12,
                                                       ".safetensors") == 0;
    if (safetensors_file || (whole.size > 9 && whole.data[8] == '{' && whole.data[5] == 0 &&
                             whole.data[6] == 0 && whole.data[7] == 0)) {
      throw Error(where + ": the file is a safetensors blob (DCP's SAFETENSORS serialization "
                          "format, torch >= 2.8, or an HF storage writer): not supported");
    }
    throw Error(where + ": not a torch.save zip (as DCP's FileSystemWriter writes every item)");
  }

  // The full tensor of `item`, its storage made of its chunks' bytes.
  Node* tensor(const DcpItem& item) {
    Graph& graph = m_ckpt.graph;
    int64_t numel = 1;
    for (int64_t size : item.size) {
      numel *= size;  // bounded by parse_dcp_metadata
    }
    Storage* storage = make_tensor_storage(graph, item.dtype, numel, item.fqn);
    uint64_t element = static_cast<uint64_t>(element_size(item.dtype));
    std::vector<Run> runs;
    for (const DcpChunk& chunk : item.chunks) {
      chunk_runs(item, chunk, runs);
    }
    std::sort(runs.begin(), runs.end(),
              [](const Run& a, const Run& b) { return a.start < b.start; });
    uint64_t next = 0;
    for (const Run& run : runs) {
      if (run.start != next) {  // parse_dcp_metadata checked the cover: a defect here
        throw Error(m_metadata_path + ": tensor " + quoted_name(item.fqn) +
                    ": its chunks do not cover element " + std::to_string(next));
      }
      append_piece(*storage, *run.file, run.file_offset, run.count * element);
      next += run.count;
    }
    try {
      finish_pieces(*storage);
    } catch (const FormatError& e) {
      throw in_file(m_metadata_path, e);
    }
    return make_tensor(graph, storage, item.dtype, item.size);
  }

  // The runs of `chunk` of `item` in the full tensor, appended to `runs`:
  // its blob's tensor checked to be the chunk, contiguous.
  void chunk_runs(const DcpItem& item, const DcpChunk& chunk, std::vector<Run>& runs) {
    auto [file, bytes] = slice(item, chunk.where);
    std::string where = item_where(file->path(), chunk.where);
    if (!looks_like_zip(bytes)) {
      not_a_blob(*file, item, chunk.where);
    }
    // Read for its pickle and record index only, its bytes left in place.
    Checkpoint blob;
    blob.path = where;
    blob.bytes = bytes;
    k_torch_zip.read(where, blob);
    std::optional<TensorRef> ref;
    try {
      ref = as_tensor(blob.graph.root);
    } catch (const FormatError& e) {
      throw in_file(where, e);
    }
    std::string what = where + ": chunk of " + quoted_name(item.fqn) + " at offsets ";
    for (size_t d = 0; d < chunk.offsets.size(); ++d) {
      what += (d == 0 ? "(" : ", ") + std::to_string(chunk.offsets[d]);
    }
    what += chunk.offsets.empty() ? "()" : ")";
    if (!ref) {
      throw Error(what + ": the blob holds no tensor");
    }
    if (ref->dtype != item.dtype || ref->sizes != chunk.sizes) {
      throw Error(what + ": the blob holds a " + std::string(dtype_name(ref->dtype)) +
                  " tensor of another shape or dtype than the chunk (" +
                  std::string(dtype_name(item.dtype)) + ")");
    }
    int64_t stride = 1;
    for (size_t d = ref->sizes.size(); d-- > 0;) {
      if (ref->sizes[d] != 1 && ref->strides[d] != stride) {
        throw Error(what + ": the blob's tensor is not contiguous (strides): not supported");
      }
      stride *= ref->sizes[d];
    }
    uint64_t element = static_cast<uint64_t>(element_size(item.dtype));
    uint64_t base = chunk.where.offset + ref->storage->file_offset +
                    static_cast<uint64_t>(ref->offset) * element;

    // The full tensor's strides; the chunk is contiguous. Runs are as long as
    // the chunk spans whole trailing dimensions: dims after `d` are whole.
    size_t n = item.size.size();
    Dims full(item.size);
    int64_t s = 1;
    for (size_t i = n; i-- > 0;) {
      full[i] = s;
      s *= item.size[i];
    }
    if (n == 0) {
      runs.push_back({0, 1, file, base});
      return;
    }
    size_t d = n - 1;
    uint64_t run = static_cast<uint64_t>(chunk.sizes[d]);
    while (d > 0 && chunk.sizes[d] == item.size[d]) {
      --d;
      run *= static_cast<uint64_t>(chunk.sizes[d]);
    }
    // An odometer over the chunk's dims before `d`, in row-major order.
    std::vector<int64_t> index(d, 0);
    uint64_t local = 0;
    while (true) {
      uint64_t start = static_cast<uint64_t>(chunk.offsets[d] * full[d]);
      for (size_t k = 0; k < d; ++k) {
        start += static_cast<uint64_t>((chunk.offsets[k] + index[k]) * full[k]);
      }
      runs.push_back({start, run, file, base + local * element});
      local += run;
      size_t k = d;
      while (true) {
        if (k == 0) {
          return;  // every index wrapped: the chunk is done
        }
        --k;
        if (++index[k] < chunk.sizes[k]) {
          break;
        }
        index[k] = 0;
      }
    }
  }

  // A bytes item: its torch.save blob decoded into the graph.
  Node* object(const DcpItem& item) {
    auto [file, bytes] = slice(item, item.where);
    std::string where = item_where(file->path(), item.where);
    if (!looks_like_zip(bytes)) {
      not_a_blob(*file, item, item.where);
    }
    Graph& graph = m_ckpt.graph;
    size_t first = graph.storages().size();
    m_ckpt.bytes = bytes;
    k_torch_zip.read(where, m_ckpt);
    for (size_t i = first; i < graph.storages().size(); ++i) {
      Storage& storage = graph.storages()[i];
      storage.key = m_ckpt.storage_records + storage.key;
      storage.file = file;
      storage.file_offset += item.where.offset;
    }
    return graph.root;
  }

  void facts() {
    std::set<long> ranks;
    size_t unnamed = 0;
    for (const std::string& file : m_metadata.files) {
      long rank = rank_of(file);
      if (rank >= 0) {
        ranks.insert(rank);
      } else {
        ++unnamed;
      }
    }
    const std::string& profile = m_metadata.profile;
    m_ckpt.facts = {
        {"archive_name", ""},
        {"version", m_metadata.version},
        {"torch_hint", "torch Distributed Checkpoint (DCP), class paths of torch " + profile},
        {"dcp_profile", profile},
        {"world_size", std::to_string(ranks.size() + unnamed)},
        {"files", std::to_string(m_metadata.files.size()) + " .distcp"},
        {"planner_data",
         m_metadata.has_planner_data ? "yes (nested keys rebuilt)" : "none (flat keys)"},
        {"unsupported", m_unread.empty() ? "none found (stream transforms and safetensors-in-DCP "
                                           "are refused)"
                                         : std::to_string(m_unread.size()) +
                                               " file(s) .metadata does not name, not read"},
    };
    if (!m_metadata.version.empty()) {
      m_ckpt.facts.emplace_back("dcp_version", m_metadata.version);
    }
  }

  std::string m_folder;
  Checkpoint& m_ckpt;
  DcpMetadata m_metadata;
  std::string m_metadata_path;
  std::map<std::string, const MappedFile*> m_files;
  std::vector<std::string> m_unread;  // files beside .metadata it does not name
};

void read_dcp(const std::string& folder, Checkpoint& ckpt) { DcpReader(folder, ckpt).read(); }

}  // namespace

extern const SourceFormat k_torch_dcp{"torch-dcp", "dcp", nullptr, sniff_none, read_dcp,
                                      claims_dcp, explain_dcp};

}  // namespace ckpt
