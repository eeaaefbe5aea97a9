// The DeepSpeed ZeRO reader: a run folder (the one holding `latest`, or a
// tag folder `global_step1200`) read as the ONE state dict zero_to_fp32
// means to give, without loading a tensor. Every rank's file is a torch.save
// zip, read by the zip reader into one graph; only the pickles are decoded.
// Each trainable parameter becomes a storage of pieces (storage_pieces.h)
// that point into the ranks' fp32 master partitions, so writers copy them
// file to file and the optimizer moments beside them are never touched.
//
// What is read, with the DeepSpeed version each rule comes from (the facts
// are in the reference notes on sharded formats, §1):
// - stage 1/2 and BF16_Optimizer (`bf16_` files, no `zero_stage`, v0.6.2+):
//   per param group, the ranks' `single_partition_of_fp32_groups[g]`
//   concatenated in rank order, cut in `param_shapes[g]` order; padding at
//   the group's end (alignment 2 × world size, v0.5.3+) is left out;
// - stage 3: per parameter, ceil(numel / world size) elements at the same
//   offset of every rank's `fp32_flat_groups` (sub-groups concatenated),
//   the padding dropped (the ceil rule of v0.5.4+);
// - `param_shapes` in the model file (v0.6.0+) or in the optim files
//   (before), a list (v0.5.4+) or one OrderedDict (before);
// - `zero_stage` an int (before v0.7.0) or `ZeroStageEnum`, pickled by value
//   or by name (`getattr`, Python 3.11.0–3.11.3);
// - frozen parameters from `frozen_param_fragments` (v0.9.1+, stage ≥ 2;
//   stage 3: every rank's slice), else from the model file's `module`;
// - tied names from `shared_params` (v0.9.2+), and before that from tensors
//   of `module` that share their bytes: each a view of one storage;
// - buffers from `module`, in their own dtype (zero_to_fp32 makes int64
//   counters float32); keys in `module`'s order, with its `_metadata`.
// Refused, naming the file and the cause: rank files missing or extra
// against `partition_count`, tensor or pipeline parallel (`mp_rank` above
// 00, `layer_*` files), MoE expert files, NVMe offload (`offloaded_tensors`),
// the stage-1 layout of DeepSpeed before 0.5.10, sizes that do not add up,
// and any global in any pickle that is no data class DeepSpeed saves.
// Which tag folder is read and what its files are, by name, is
// deepspeed_folder.h's business; this file decodes them.

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/globals.h"
#include "ckpt/hf_index.h"
#include "ckpt/source.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"
#include "ckpt/zip.h"
#include "formats/deepspeed_folder.h"

namespace ckpt {

extern const SourceFormat k_torch_zip;  // torch_zip.cc

namespace {

using namespace deepspeed;  // the run folder's files: deepspeed_folder.h

// ---- reading one file ------------------------------------------------------

// The globals DeepSpeed's own pickles name beside torch's data classes
// (reference §1.6): built inert, never looked up.
bool is_deepspeed_data(const Node& global) {
  static const std::unordered_set<std::string> names = {
      "deepspeed.runtime.zero.config.ZeroStageEnum",         // v0.7.0+
      "deepspeed.runtime.fp16.loss_scaler.LossScaler",       // v0.3.16+
      "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
      "deepspeed.utils.tensor_fragment.fragment_address",    // v0.7.3+
      "deepspeed.runtime.bf16_optimizer.fragment_address",   // v0.6.2–v0.7.2
  };
  std::string name = qualified_name(global);
  return names.count(name) != 0 || is_benign_global(name);
}

bool is_getattr(const Node* node) {
  return node != nullptr &&
         (node->is_global("__builtin__", "getattr") || node->is_global("builtins", "getattr"));
}

bool is_zero_stage_enum(const Node* node) {
  return node != nullptr && node->is_global("deepspeed.runtime.zero.config", "ZeroStageEnum");
}

// `getattr(ZeroStageEnum, 'name')`: the by-name encoding of a stage.
bool is_enum_by_name(const Node* call) {
  return call->kind == NodeKind::k_call && is_getattr(call->callable) && call->args != nullptr &&
         call->args->items.size() == 2 && is_zero_stage_enum(call->args->items[0]) &&
         call->args->items[1]->is_str();
}

// Refuses a global that is no data class (`os.system`, a user's class): the
// file would run code where Python loads it, whatever this tool does.
void check_globals(const std::string& where, const Node* root) {
  std::unordered_set<const Node*> enum_getattr;
  for_each_reachable(root, [&](const Node* node) {
    if (node->kind == NodeKind::k_call && is_getattr(node->callable)) {
      if (!is_enum_by_name(node)) {
        fail(where, "getattr on something other than ZeroStageEnum: a pickle that would run "
                    "code when loaded; refused");
      }
      enum_getattr.insert(node->callable);
    }
    if (node->kind == NodeKind::k_global && enum_getattr.count(node) == 0 &&
        !is_deepspeed_data(*node)) {
      fail(where, "global " + qualified_name(*node) +
                      " is no data class DeepSpeed saves: a pickle that would run code when "
                      "loaded; refused");
    }
    return true;
  });
}

// Maps and decodes the torch.save zip `path` into `ckpt`'s graph; returns
// its root, a dict.
const Node* read_file(Checkpoint& ckpt, const std::string& path) {
  ckpt.files.push_back(MappedFile::open(path));
  ckpt.bytes = ckpt.files.back().bytes();
  if (!looks_like_zip(ckpt.bytes)) {
    fail(path, "not a torch.save zip archive (DeepSpeed saves every file with torch.save)");
  }
  size_t first = ckpt.graph.storages().size();
  uint64_t pickles = ckpt.pickle_bytes;
  k_torch_zip.read(path, ckpt);
  ckpt.pickle_bytes += pickles;
  for (size_t i = first; i < ckpt.graph.storages().size(); ++i) {
    Storage& storage = ckpt.graph.storages()[i];
    storage.key = ckpt.storage_records + storage.key;
  }
  std::string where = path + ":" + ckpt.pickle_record;
  check_globals(where, ckpt.graph.root);
  if (ckpt.graph.root == nullptr || ckpt.graph.root->kind != NodeKind::k_dict) {
    fail(where, "not a DeepSpeed checkpoint file: its root is no dict");
  }
  return ckpt.graph.root;
}

// ---- values ----------------------------------------------------------------

std::optional<int64_t> int_of(const Node* node) {
  if (node != nullptr && node->kind == NodeKind::k_int && node->text.empty()) {
    return node->integer;
  }
  return std::nullopt;
}

// `zero_stage`: an int (before v0.7.0), `ZeroStageEnum(2)` (by value) or
// `getattr(ZeroStageEnum, 'gradients')` (by name).
int64_t zero_stage_of(const std::string& where, const Node* node) {
  if (std::optional<int64_t> value = int_of(node)) {
    return *value;
  }
  if (node->kind == NodeKind::k_call && is_zero_stage_enum(node->callable) &&
      node->args != nullptr && node->args->items.size() == 1) {
    if (std::optional<int64_t> value = int_of(node->args->items[0])) {
      return *value;
    }
  }
  if (is_enum_by_name(node)) {
    static const std::map<std::string, int64_t> stages = {
        {"disabled", 0}, {"optimizer_states", 1}, {"gradients", 2}, {"weights", 3},
        {"max_stage", 3}};
    auto found = stages.find(node->args->items[1]->text.str());
    if (found != stages.end()) {
      return found->second;
    }
  }
  fail(where, "zero_stage is neither an int nor a ZeroStageEnum member");
}

// A `torch.Size` (or a tuple or list of ints) as dims.
Dims shape_of(const std::string& where, const Node* node) {
  if (node != nullptr && node->kind == NodeKind::k_call && node->callable != nullptr &&
      node->callable->is_global("torch", "Size") && node->args != nullptr &&
      node->args->items.size() == 1) {
    node = node->args->items[0];
  }
  if (node == nullptr || (node->kind != NodeKind::k_tuple && node->kind != NodeKind::k_list)) {
    fail(where, "a shape is not a torch.Size");
  }
  Dims dims;
  for (const Node* item : node->items) {
    std::optional<int64_t> size = int_of(item);
    if (!size || *size < 0) {
      fail(where, "a shape holds something other than a size");
    }
    dims.push_back(*size);
  }
  return dims;
}

// `total` + `more`, refused past int64 (a hostile shape list).
int64_t sum_of(const std::string& where, int64_t total, int64_t more) {
  int64_t sum = 0;
  if (__builtin_add_overflow(total, more, &sum)) {
    fail(where, "sizes do not add up: more than 2^63 elements");
  }
  return sum;
}

// ceil(`numel` / `world`) without overflow: a stage-3 slice (v0.5.4+; floor before).
int64_t ceil_div(int64_t numel, int64_t world) {
  return numel / world + (numel % world != 0 ? 1 : 0);
}

int64_t numel_of(const Dims& dims) {
  int64_t numel = 1;
  for (int64_t size : dims) {
    if (size != 0 && numel > INT64_MAX / size) {
      throw Error("a shape of more than 2^63 elements");
    }
    numel *= size;
  }
  return numel;
}

using Shapes = std::vector<std::pair<std::string, Dims>>;

// An OrderedDict of name → shape.
Shapes shapes_of(const std::string& where, const Node* dict) {
  if (dict == nullptr || dict->kind != NodeKind::k_dict) {
    fail(where, "not a dict of names to shapes");
  }
  Shapes shapes;
  for (const NodeEntry& entry : dict->entries) {
    if (!entry.first->is_str()) {
      fail(where, "a name that is not a string");
    }
    shapes.emplace_back(entry.first->text.str(), shape_of(where + "['" + entry.first->text.str() +
                                                              "']", entry.second));
  }
  return shapes;
}

// `param_shapes`: a list of OrderedDicts (v0.5.4+) or one (before).
std::vector<Shapes> param_shapes_of(const std::string& where, const Node* node) {
  std::vector<Shapes> groups;
  if (node->kind == NodeKind::k_dict) {
    groups.push_back(shapes_of(where, node));
    return groups;
  }
  if (node->kind != NodeKind::k_list && node->kind != NodeKind::k_tuple) {
    fail(where, "neither a list of OrderedDicts nor one");
  }
  for (size_t g = 0; g < node->items.size(); ++g) {
    groups.push_back(shapes_of(where + "[" + std::to_string(g) + "]", node->items[g]));
  }
  return groups;
}

const Node* need(const std::string& where, const Node* dict, const char* key) {
  const Node* value = dict_get(dict, key);
  if (value == nullptr) {
    fail(where, std::string("no '") + key + "' key");
  }
  return value;
}

// A tensor of a rank file, as a run of elements in its file.
TensorRef file_tensor(const std::string& where, const Node* node) {
  std::optional<TensorRef> tensor;
  try {
    tensor = as_tensor(node);
  } catch (const FormatError& e) {
    throw in_file(where, e);
  }
  if (!tensor) {
    fail(where, "not a tensor");
  }
  if (tensor->storage->file == nullptr || has_pieces(*tensor->storage)) {
    fail(where, "a tensor whose bytes are not in its file");
  }
  int64_t expected = 1;
  for (size_t i = tensor->sizes.size(); i-- > 0;) {
    if (tensor->sizes[i] > 1 && tensor->strides[i] != expected) {
      fail(where, "a tensor that is not contiguous");
    }
    expected *= tensor->sizes[i];
  }
  return *tensor;
}

// The rank-file records that pieces are taken of, each once, with their
// CRC-32s (Checkpoint::piece_sources): the consolidated tensors carry none.
class SourceRecords {
public:
  explicit SourceRecords(std::vector<PieceSource>& out) : m_out(out) {}
  void note(const Storage& storage) {
    if (storage.has_crc32 && storage.file != nullptr && m_seen.insert(&storage).second) {
      m_out.push_back({storage.file, storage.key, storage.file_offset,
                       storage.bytes.size, storage.crc32});
    }
  }

private:
  std::vector<PieceSource>& m_out;
  std::unordered_set<const Storage*> m_seen;
};

// Tensors laid end to end (a group's ranks, a rank's sub-groups): takes
// ranges of elements as pieces of their files, whose records `sources` notes.
class Flat {
public:
  Flat(Dtype dtype, SourceRecords& sources) : m_dtype(dtype), m_sources(&sources) {}

  void add(const std::string& where, const TensorRef& tensor) {
    if (tensor.dtype != m_dtype) {
      fail(where, "a " + std::string(dtype_name(tensor.dtype)) + " tensor where " +
                      std::string(dtype_name(m_dtype)) + " was expected");
    }
    m_sources->note(*tensor.storage);
    m_starts.push_back(m_total);
    m_runs.push_back(tensor);
    m_total += tensor.numel();
  }
  int64_t total() const { return m_total; }
  Dtype dtype() const { return m_dtype; }

  // Appends elements [`start`, `start` + `count`) to `out`'s pieces.
  void take(Storage& out, int64_t start, int64_t count) const {
    uint64_t size = element_size(m_dtype);
    size_t i = static_cast<size_t>(
        std::upper_bound(m_starts.begin(), m_starts.end(), start) - m_starts.begin());
    i = i == 0 ? 0 : i - 1;
    while (count > 0 && i < m_runs.size()) {
      const TensorRef& run = m_runs[i];
      int64_t within = start - m_starts[i];
      int64_t n = std::min(count, run.numel() - within);
      if (n > 0) {
        append_piece(out, *run.storage->file,
                     run.storage->file_offset + static_cast<uint64_t>(run.offset + within) * size,
                     static_cast<uint64_t>(n) * size);
        start += n;
        count -= n;
      }
      ++i;
    }
  }

private:
  Dtype m_dtype;
  SourceRecords* m_sources;
  std::vector<TensorRef> m_runs;
  std::vector<int64_t> m_starts;
  int64_t m_total = 0;
};

// ---- the run ---------------------------------------------------------------

struct Output {
  Graph& graph;
  std::unordered_map<std::string, Node*> built;  // name → tensor node

  // A fresh `cpu` storage of `shape` filled by `fill(storage)`.
  template <typename Fill>
  Node* tensor(const std::string& key, Dtype dtype, const Dims& shape, const Fill& fill) {
    Storage* storage = make_tensor_storage(graph, dtype, numel_of(shape), key, "cpu");
    fill(*storage);
    try {
      finish_pieces(*storage);
    } catch (const FormatError& e) {
      throw Error(e.what());
    }
    return make_tensor(graph, storage, dtype, shape);
  }
  // A view of the tensor `node` (same storage, dtype and sizes).
  Node* view(const Node* node) {
    std::optional<TensorRef> tensor = as_tensor(node);
    return make_tensor(graph, tensor->storage, tensor->dtype, tensor->sizes);
  }
};

// One tag folder being read: its files, decoded, and what they tell.
class RunReader {
public:
  RunReader(const std::string& run, Checkpoint& ckpt) : m_ckpt(ckpt), m_out{ckpt.graph, {}} {
    std::tie(m_folder, m_tag) = tag_folder(run, ckpt.options.tag);
  }

  void read() {
    read_optimizer_files();
    read_model_files();
    if (m_stage == 3) {
      sliced_masters();
    } else {
      partitioned_masters();
    }
    frozen_parameters();
    m_ckpt.graph.root = state_dict();
    drop_rank_file_storages(m_rank_storages);
    set_facts();
  }

private:
  // Rank 0's optimizer file tells the stage and the world size; then every
  // rank must be there once.
  void read_optimizer_files() {
    m_files = classify(m_folder);
    for (const RankFile& file : m_files.optim) {
      m_optim_path.push_back(join(m_folder, file.name));
    }
    if (m_files.optim.front().rank != 0) {
      fail(m_folder, "rank 0 is missing: no " + std::string(m_files.bf16_prefix ? "bf16_" : "") +
                         "zero_pp_rank_0_mp_rank_00_optim_states.pt");
    }
    m_optim.push_back(read_file(m_ckpt, m_optim_path[0]));
    const Node* osd0 = optimizer_state(0);
    if (dict_get(osd0, "local_sub_partitions_of_fp32_groups") != nullptr) {
      fail(m_optim_path[0], "the stage-1 layout of DeepSpeed before 0.5.10 "
                            "(local_sub_partitions_of_fp32_groups) is not supported");
    }
    if (const Node* value = dict_get(osd0, "zero_stage")) {
      m_stage = zero_stage_of(m_optim_path[0] + ": optimizer_state_dict", value);
      if (m_stage < 1 || m_stage > 3) {
        fail(m_optim_path[0], "zero_stage " + std::to_string(m_stage) +
                                  ": no ZeRO partitions to read");
      }
    } else if (dict_get(osd0, "single_partition_of_fp32_groups") != nullptr) {
      m_bf16_optimizer = true;  // v0.6.2+: no zero_stage key (zero_to_fp32 refuses these)
    } else {
      fail(m_optim_path[0], "optimizer_state_dict has no zero_stage and no "
                            "single_partition_of_fp32_groups: no ZeRO or BF16_Optimizer state");
    }
    const Node* count =
        need(m_optim_path[0] + ": optimizer_state_dict", osd0, "partition_count");
    if (std::optional<int64_t> value = int_of(count)) {
      m_world = *value;
    } else if (count->kind == NodeKind::k_list || count->kind == NodeKind::k_tuple) {
      for (const Node* item : count->items) {  // one per group; expert groups could differ
        m_world = std::max(m_world, int_of(item).value_or(0));
      }
    }
    if (m_world <= 0 || m_world > (1 << 20)) {
      fail(m_optim_path[0], "partition_count is no world size");
    }
    std::string prefix = m_files.bf16_prefix ? "bf16_" : "";
    check_ranks(m_folder, m_files.optim, m_world,
                prefix + "zero_pp_rank_RANK_mp_rank_00_optim_states.pt", said_by());
    for (size_t i = 1; i < m_files.optim.size(); ++i) {
      m_optim.push_back(read_file(m_ckpt, m_optim_path[i]));
    }
    for (size_t r = 1; r < m_optim.size() && !m_bf16_optimizer; ++r) {
      std::string where = m_optim_path[r] + ": optimizer_state_dict";
      const Node* value = dict_get(optimizer_state(r), "zero_stage");
      if (value == nullptr || zero_stage_of(where, value) != m_stage) {
        fail(where, "zero_stage differs from rank 0's (" + std::to_string(m_stage) + ")");
      }
    }
  }

  // The model files: one (stage 1/2), or one per rank (stage 3); and what
  // they tell: `module`, the version, `param_shapes`.
  void read_model_files() {
    if (m_stage == 3) {
      check_ranks(m_folder, m_files.models3, m_world,
                  "zero_pp_rank_RANK_mp_rank_00_model_states.pt", said_by());
      for (const RankFile& file : m_files.models3) {
        m_model_path.push_back(join(m_folder, file.name));
        m_models.push_back(read_file(m_ckpt, m_model_path.back()));
      }
    } else {
      if (!m_files.model12) {
        fail(m_folder, "no mp_rank_00_model_states.pt: the model file (buffers, shapes) is "
                       "missing");
      }
      m_model_path.push_back(join(m_folder, "mp_rank_00_model_states.pt"));
      m_models.push_back(read_file(m_ckpt, m_model_path.back()));
    }
    m_module = need(m_model_path[0], m_models[0], "module");
    if (m_module->kind != NodeKind::k_dict) {
      fail(m_model_path[0], "module is not a state dict");
    }
    for (const Node* root : {m_models[0], m_optim[0]}) {
      const Node* value = dict_get(root, "ds_version");  // v0.4.0+
      if (value != nullptr && value->is_str()) {
        m_version = value->text.str();
        break;
      }
    }
    // param_shapes: the model file's (v0.6.0+), else the optim files' (before).
    const Node* shapes = dict_get(m_models[0], "param_shapes");
    m_shapes_where = m_model_path[0] + ": param_shapes";
    if (shapes == nullptr || shapes->kind == NodeKind::k_none) {
      shapes = dict_get(m_optim[0], "param_shapes");
      m_shapes_where = m_optim_path[0] + ": param_shapes";
    }
    if (shapes == nullptr || shapes->kind == NodeKind::k_none) {
      fail(m_model_path[0], "no param_shapes, here or in the optimizer files");
    }
    m_groups = param_shapes_of(m_shapes_where, shapes);
    m_rank_storages = m_ckpt.graph.storages().size();
  }

  // The rank files' own storages (masters, moments, module's tensors) are
  // no storage of the result, whose storages are pieces of their bytes:
  // dropped, so that what walks every storage (check's locations, `cuda:N`)
  // sees the result's alone; kept when the result reaches one (a tensor in
  // a non-tensor entry of `module`). They are the first `count`: every
  // file is read before the first storage of the result is made, and
  // erasing at a deque's front moves no other element.
  void drop_rank_file_storages(size_t count) {
    std::deque<Storage>& storages = m_ckpt.graph.storages();
    std::unordered_set<const Storage*> rank_files;
    for (size_t i = 0; i < count; ++i) {
      rank_files.insert(&storages[i]);
    }
    for (const TensorRef& tensor : tensors_reachable(m_ckpt.graph.root)) {
      if (rank_files.count(tensor.storage) != 0) {
        return;
      }
    }
    storages.erase(storages.begin(), storages.begin() + static_cast<std::ptrdiff_t>(count));
  }

  // Stage 1/2 and BF16_Optimizer: per group, the ranks' partitions end to
  // end, cut in param_shapes order; the alignment padding (2 × world size,
  // v0.5.3+) at the group's end is left out.
  void partitioned_masters() {
    std::vector<const Node*> parts;
    for (size_t r = 0; r < m_optim.size(); ++r) {
      std::string where = m_optim_path[r] + ": optimizer_state_dict";
      parts.push_back(need(where, optimizer_state(r), "single_partition_of_fp32_groups"));
      if (parts[r]->kind != NodeKind::k_list || parts[r]->items.size() != m_groups.size()) {
        fail(where, "single_partition_of_fp32_groups holds " +
                        std::to_string(parts[r]->items.size()) + " groups, param_shapes " +
                        std::to_string(m_groups.size()));
      }
    }
    int64_t align = 2 * m_world;
    auto aligned = [&](int64_t n) { return (n / align + (n % align != 0 ? 1 : 0)) * align; };
    for (size_t g = 0; g < m_groups.size(); ++g) {
      Flat flat(Dtype::k_float32, m_sources);
      for (size_t r = 0; r < parts.size(); ++r) {
        std::string where =
            m_optim_path[r] + ": single_partition_of_fp32_groups[" + std::to_string(g) + "]";
        flat.add(where, file_tensor(where, parts[r]->items[g]));
      }
      int64_t needed = 0;
      for (const auto& [name, shape] : m_groups[g]) {
        needed = sum_of(m_shapes_where, needed, numel_of(shape));
      }
      if (needed > flat.total() || aligned(needed) != aligned(flat.total())) {
        fail(m_folder, "param group " + std::to_string(g) + ": sizes do not add up: the " +
                           std::to_string(m_world) + " ranks' fp32 partitions hold " +
                           std::to_string(flat.total()) + " elements, param_shapes[" +
                           std::to_string(g) + "] needs " + std::to_string(needed));
      }
      int64_t offset = 0;
      for (const auto& [name, shape] : m_groups[g]) {
        int64_t numel = numel_of(shape);
        add(name, m_out.tensor(key_of(name, "fp32 master"), Dtype::k_float32, shape,
                               [&](Storage& s) { flat.take(s, offset, numel); }));
        offset += numel;
      }
    }
  }

  // Stage 3: one ceil(numel / world) slice of every parameter at the same
  // offset of each rank's sub-groups end to end (v0.16 walks them so; older
  // versions concatenated them first: the same), the padding dropped.
  void sliced_masters() {
    std::vector<Flat> flats(static_cast<size_t>(m_world), Flat(Dtype::k_float32, m_sources));
    int64_t needed = 0;
    for (const Shapes& group : m_groups) {
      for (const auto& [name, shape] : group) {
        needed = sum_of(m_shapes_where, needed, ceil_div(numel_of(shape), m_world));
      }
    }
    for (size_t r = 0; r < flats.size(); ++r) {
      std::string where = m_optim_path[r] + ": optimizer_state_dict";
      const Node* list = need(where, optimizer_state(r), "fp32_flat_groups");
      if (list->kind != NodeKind::k_list) {
        fail(where, "fp32_flat_groups is not a list");
      }
      for (size_t g = 0; g < list->items.size(); ++g) {
        std::string at = where + ": fp32_flat_groups[" + std::to_string(g) + "]";
        flats[r].add(at, file_tensor(at, list->items[g]));
      }
      if (flats[r].total() != needed) {
        fail(m_optim_path[r], "sizes do not add up: fp32_flat_groups hold " +
                                  std::to_string(flats[r].total()) +
                                  " elements, param_shapes needs " + std::to_string(needed) +
                                  " (ceil(numel / " + std::to_string(m_world) +
                                  ") per parameter)" +
                                  (flats[r].total() == 0 ? "; NVMe-offloaded partitions?" : ""));
      }
    }
    int64_t offset = 0;
    for (const Shapes& group : m_groups) {
      for (const auto& [name, shape] : group) {
        int64_t numel = numel_of(shape);
        add(name, m_out.tensor(key_of(name, "fp32 master"), Dtype::k_float32, shape,
                               [&](Storage& s) {
                                 take_slices(flats, s, offset, ceil_div(numel, m_world), numel);
                               }));
        offset += ceil_div(numel, m_world);
      }
    }
  }

  // Appends the first `numel` elements of rank 0's, 1's… slices of `slice`
  // elements at `offset` of `flats` to `out`.
  static void take_slices(const std::vector<Flat>& flats, Storage& out, int64_t offset,
                          int64_t slice, int64_t numel) {
    for (size_t r = 0; r < flats.size(); ++r) {
      int64_t n = std::min(slice, numel - static_cast<int64_t>(r) * slice);
      if (n > 0) {
        flats[r].take(out, offset, n);
      }
    }
  }

  // Frozen parameters (v0.9.1+, stage ≥ 2): the whole tensor (stage 2) or
  // each rank's slice (stage 3), in the model dtype, as zero_to_fp32 keeps
  // them. Without them (stage 1, older versions) `module` holds them.
  void frozen_parameters() {
    const Node* frozen_shapes = dict_get(m_models[0], "frozen_param_shapes");
    if (frozen_shapes == nullptr || frozen_shapes->kind != NodeKind::k_dict) {
      return;
    }
    for (const auto& [name, shape] :
         shapes_of(m_model_path[0] + ": frozen_param_shapes", frozen_shapes)) {
      int64_t numel = numel_of(shape);
      int64_t slice = m_stage == 3 ? ceil_div(numel, m_world) : numel;
      std::vector<Flat> fragments;
      for (size_t r = 0; r < m_models.size(); ++r) {
        std::string where = m_model_path[r] + ": frozen_param_fragments['" + name + "']";
        const Node* dict = need(m_model_path[r], m_models[r], "frozen_param_fragments");
        const Node* value = dict->kind == NodeKind::k_dict ? dict_get(dict, name) : nullptr;
        if (value == nullptr) {
          fail(m_model_path[r] + ": frozen_param_fragments",
               "no fragment of frozen parameter " + quoted_name(name));
        }
        TensorRef fragment = file_tensor(where, value);
        if (fragment.numel() != slice) {
          fail(where, "sizes do not add up: " + std::to_string(fragment.numel()) +
                          " elements, where " + std::to_string(slice) + " were expected");
        }
        fragments.emplace_back(fragments.empty() ? fragment.dtype : fragments[0].dtype(), m_sources);
        fragments.back().add(where, fragment);
      }
      add(name, m_out.tensor(key_of(name, "frozen"), fragments[0].dtype(), shape,
                             [&](Storage& s) { take_slices(fragments, s, 0, slice, numel); }));
    }
  }

  // The state dict, in module's order with its `_metadata`: each name the
  // tensor built for it, an alias of `shared_params` (v0.9.2+) or a tensor
  // sharing its bytes with one placed before (ties before v0.9.2) a view,
  // and the rest (buffers, stage-1 frozen parameters) module's own tensor
  // in its dtype.
  Node* state_dict() {
    std::vector<std::pair<std::string, std::string>> shared;
    if (const Node* dict = dict_get(m_models[0], "shared_params");
        dict != nullptr && dict->kind == NodeKind::k_dict) {
      for (const NodeEntry& entry : dict->entries) {
        if (entry.first->is_str() && entry.second->is_str()) {
          shared.emplace_back(entry.first->text.str(), entry.second->text.str());
        }
      }
    }
    std::unordered_set<std::string> buffer_names;
    const Node* buffers = dict_get(m_models[0], "buffer_names");  // v0.5.0+
    if (buffers != nullptr && buffers->kind == NodeKind::k_list) {
      for (const Node* item : buffers->items) {
        if (item->is_str()) {
          buffer_names.insert(item->text.str());
        }
      }
    }
    auto alias_of = [&](const std::string& name) -> Node* {
      for (const auto& [alias, source] : shared) {
        auto found = alias == name ? m_out.built.find(source) : m_out.built.end();
        if (found != m_out.built.end()) {
          return m_out.view(found->second);
        }
      }
      return nullptr;
    };
    using Bytes = std::tuple<const Storage*, int64_t, std::vector<int64_t>>;
    std::map<Bytes, Node*> by_bytes;
    std::vector<std::pair<std::string, Node*>> entries;
    std::unordered_set<std::string> placed;
    const std::string& model_file = m_model_path[0];
    for (const NodeEntry& entry : m_module->entries) {
      if (!entry.first->is_str()) {
        fail(model_file, "module: a key that is not a string");
      }
      std::string name = entry.first->text.str();
      std::string where = model_file + ": module['" + name + "']";
      std::optional<TensorRef> held;
      try {
        held = as_tensor(entry.second);
      } catch (const FormatError& e) {
        throw in_file(where, e);
      }
      std::optional<Bytes> bytes;
      if (held && held->numel() != 0) {
        bytes = Bytes{held->storage, held->offset, held->sizes.vec()};
      }
      Node* node = nullptr;
      auto built = m_out.built.find(name);
      if (built != m_out.built.end()) {
        node = built->second;
      } else if ((node = alias_of(name)) != nullptr) {
      } else if (bytes && by_bytes.count(*bytes) != 0) {
        node = m_out.view(by_bytes.at(*bytes));
      } else if (!held) {
        node = entry.second;  // an inert non-tensor entry (`_extra_state`)
      } else if (m_stage == 3 && held->numel() == 0 && buffer_names.count(name) == 0) {
        fail(where, "a partitioned parameter (an empty placeholder) with no fp32 master in "
                    "param_shapes and no frozen fragment");
      } else {
        TensorRef tensor = file_tensor(where, entry.second);
        Flat whole(tensor.dtype, m_sources);
        whole.add(where, tensor);
        node = m_out.tensor(key_of(name, buffer_names.count(name) != 0 ? "buffer" : "module"),
                            tensor.dtype, tensor.sizes,
                            [&](Storage& s) { whole.take(s, 0, tensor.numel()); });
      }
      if (bytes && by_bytes.count(*bytes) == 0) {
        by_bytes.emplace(*bytes, node);
      }
      placed.insert(name);
      entries.emplace_back(name, node);
    }
    // Parameters and aliases module lacks: after its keys.
    for (const Shapes& group : m_groups) {
      for (const auto& [name, shape] : group) {
        if (placed.insert(name).second) {
          entries.emplace_back(name, m_out.built.at(name));
        }
      }
    }
    for (const auto& [alias, source] : shared) {
      Node* node = placed.count(alias) == 0 ? alias_of(alias) : nullptr;
      if (node != nullptr) {
        placed.insert(alias);
        entries.emplace_back(alias, node);
      }
    }
    Node* root = make_state_dict(m_ckpt.graph, entries);
    root->state = m_module->state;  // `_metadata`: BatchNorm and friends keep their versions
    return root;
  }

  void set_facts() {
    m_ckpt.bytes = {};
    m_ckpt.pickle_record = "module";
    m_ckpt.storage_records.clear();
    std::string ranks = std::to_string(m_world) + (m_world == 1 ? " rank" : " ranks");
    m_ckpt.facts = {
        {"archive_name", ""},
        {"version", ""},
        {"torch_hint", "DeepSpeed " + m_version + " " + kind() + " run, " + ranks + ", tag " + m_tag},
        {"deepspeed_stage",
         m_bf16_optimizer ? "BF16_Optimizer (no zero_stage)" : std::to_string(m_stage)},
        {"ds_version", m_version},
        {"world_size", std::to_string(m_world)},
        {"bf16_optimizer", m_bf16_optimizer ? "yes" : "no"},
        {"tag", m_tag},
        {"unsupported", "none found (tensor/pipeline parallel, MoE and NVMe offload are refused)"},
        {"not_read", "optimizer moments, loss scaler, lr scheduler (a state dict holds weights)"},
    };
  }

  const Node* optimizer_state(size_t rank) const {
    const Node* osd = need(m_optim_path[rank], m_optim[rank], "optimizer_state_dict");
    if (osd->kind != NodeKind::k_dict) {
      fail(m_optim_path[rank], "optimizer_state_dict is not a dict");
    }
    return osd;
  }
  std::string said_by() const { return "partition_count in " + m_files.optim[0].name; }
  std::string kind() const {
    return m_bf16_optimizer ? "BF16_Optimizer" : "ZeRO-" + std::to_string(m_stage);
  }
  // How messages name the storage of `name`.
  std::string key_of(const std::string& name, const std::string& what) const {
    return m_folder + ": " + quoted_name(name) + " (" + what + ", " + kind() + ")";
  }
  void add(const std::string& name, Node* node) {
    if (!m_out.built.emplace(name, node).second) {
      fail(m_shapes_where, quoted_name(name) + " is named twice");
    }
  }

  Checkpoint& m_ckpt;
  Output m_out;
  SourceRecords m_sources{m_ckpt.piece_sources};
  std::string m_folder;
  std::string m_tag;
  TagFiles m_files;
  std::vector<const Node*> m_optim;        // each rank's optimizer file, by rank
  std::vector<std::string> m_optim_path;
  std::vector<const Node*> m_models;       // the model file, or each rank's (stage 3)
  std::vector<std::string> m_model_path;
  const Node* m_module = nullptr;          // the model file's `module`
  int64_t m_stage = 0;
  bool m_bf16_optimizer = false;
  int64_t m_world = 0;
  std::string m_version = "unknown";
  std::vector<Shapes> m_groups;            // param_shapes
  std::string m_shapes_where;              // where param_shapes is, for messages
  size_t m_rank_storages = 0;              // the storages the rank files made
};

void read_deepspeed(const std::string& run, Checkpoint& ckpt) { RunReader(run, ckpt).read(); }

}  // namespace

extern const SourceFormat k_deepspeed{"deepspeed", "deepspeed", nullptr,
                                      [](const std::string&, ByteSpan) { return false; },
                                      read_deepspeed, deepspeed::claims_deepspeed,
                                      deepspeed::explain_deepspeed};

}  // namespace ckpt
