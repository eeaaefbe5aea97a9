// The DeepSpeed ZeRO reader (src/formats/deepspeed.cc) on run folders whose
// rank files are written here, pickle and all, from graphs: what each stage
// rebuilds from which bytes, and the refusals with their exact messages.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/source.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"
#include "ckpt/zip_writer.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

// One rank file's pickle, built as DeepSpeed's torch.save writes it.
class RankFile {
public:
  Node* dict(const std::vector<std::pair<std::string, Node*>>& entries) {
    Node* node = m_graph.make(NodeKind::k_dict);
    for (const auto& [key, value] : entries) {
      m_graph.push_back(node->entries, NodeEntry{m_graph.make_str(key), value});
    }
    return node;
  }
  Node* ordered(const std::vector<std::pair<std::string, Node*>>& entries) {
    return make_state_dict(m_graph, entries);
  }
  Node* list(const std::vector<Node*>& items) {
    Node* node = m_graph.make(NodeKind::k_list);
    for (Node* item : items) {
      m_graph.push_back(node->items, item);
    }
    return node;
  }
  Node* integer(int64_t value) { return m_graph.make_int(value); }
  Node* str(const std::string& text) { return m_graph.make_str(text); }
  Node* call(Node* callable, const std::vector<Node*>& args) {
    Node* node = m_graph.make(NodeKind::k_call);
    node->callable = callable;
    node->args = m_graph.make(NodeKind::k_tuple);
    for (Node* arg : args) {
      m_graph.push_back(node->args->items, arg);
    }
    return node;
  }
  Node* stage_by_value(int64_t stage) {
    return call(m_graph.make_global("deepspeed.runtime.zero.config", "ZeroStageEnum"),
                {integer(stage)});
  }
  Node* stage_by_name(const std::string& name) {
    return call(m_graph.make_global("__builtin__", "getattr"),
                {m_graph.make_global("deepspeed.runtime.zero.config", "ZeroStageEnum"), str(name)});
  }
  Node* size(const std::vector<int64_t>& dims) {
    Node* tuple = m_graph.make(NodeKind::k_tuple);
    for (int64_t d : dims) {
      m_graph.push_back(tuple->items, integer(d));
    }
    return call(m_graph.make_global("torch", "Size"), {tuple});
  }
  Node* global(const std::string& module, const std::string& name) {
    return m_graph.make_global(module, name);
  }
  template <typename T>
  Node* tensor(Dtype dtype, const std::vector<T>& values, const Dims& sizes) {
    m_bytes.emplace_back(values.empty() ? std::string()
                                        : std::string(reinterpret_cast<const char*>(values.data()),
                                                      values.size() * sizeof(T)));
    Storage* storage = make_tensor_storage(m_graph, dtype, static_cast<int64_t>(values.size()),
                                           "s", "cuda:0");
    storage->bytes = span_of(m_bytes.back());
    return make_tensor(m_graph, storage, dtype, sizes);
  }
  Node* f32(const std::vector<float>& values) {
    return tensor(Dtype::k_float32, values, {static_cast<int64_t>(values.size())});
  }

  void save(const std::string& path, Node* root) {
    EncodedPickle pickle = encode_pickle(root);
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ZipWriter zip(fd, path);
    zip.add("data.pkl", span_of(pickle.bytes));
    for (size_t i = 0; i < pickle.storages.size(); ++i) {
      zip.add("data/" + std::to_string(i), pickle.storages[i]->bytes);
    }
    zip.finish();
    ::close(fd);
  }

private:
  Graph m_graph;
  std::deque<std::string> m_bytes;
};

// The values of `name` in `ckpt`'s state dict, read through its pieces.
template <typename T>
std::vector<T> values_of(const Checkpoint& ckpt, const std::string& name, Dtype* dtype = nullptr) {
  const Node* node = dict_get(ckpt.graph.root, name);
  EXPECT_NE(node, nullptr) << name;
  if (node == nullptr) {
    return {};
  }
  TensorRef tensor = *as_tensor(node);
  if (dtype != nullptr) {
    *dtype = tensor.dtype;
  }
  std::vector<T> out(static_cast<size_t>(tensor.numel()));
  read_storage_range(*tensor.storage, static_cast<uint64_t>(tensor.offset) * sizeof(T),
                     reinterpret_cast<uint8_t*>(out.data()), out.size() * sizeof(T));
  return out;
}

std::vector<std::string> keys_of(const Checkpoint& ckpt) {
  std::vector<std::string> keys;
  for (const NodeEntry& entry : ckpt.graph.root->entries) {
    keys.push_back(entry.first->text.str());
  }
  return keys;
}

std::string read_error(const std::string& path, const std::string& tag = "") {
  try {
    read_checkpoint(path, ReadOptions{tag});
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A stage-2 optimizer file of a run of 2 ranks at `path`, holding `part` as
// its one group's partition, and `ds_config` when given.
void save_optim(RankFile& file, const std::string& path, Node* stage,
                const std::vector<float>& part, Node* ds_config = nullptr) {
  Node* osd = file.dict({{"zero_stage", stage},
                         {"partition_count", file.list({file.integer(2)})},
                         {"single_partition_of_fp32_groups", file.list({file.f32(part)})},
                         {"base_optimizer_state", file.dict({})}});
  std::vector<std::pair<std::string, Node*>> top = {{"optimizer_state_dict", osd},
                                                    {"ds_version", file.str("0.16.4")}};
  if (ds_config != nullptr) {
    top.emplace_back("ds_config", ds_config);
  }
  file.save(path, file.dict(top));
}

// Stage 2, two ranks: w (3) and b (2) in one group, 5 elements aligned to
// 4 (2 × 2 ranks): rank 0 holds [w0 w1 w2 b0], rank 1 [b1] (its padding
// stripped); an int64 buffer `n` and a tied `w2` (shared_params).
void write_stage2(const std::string& tag, Node* (*stage)(RankFile&), int ranks_written = 2) {
  RankFile model;
  Node* module = model.ordered({{"w", model.f32({9, 9, 9})},
                                {"b", model.f32({9, 9})},
                                {"n", model.tensor<int64_t>(Dtype::k_int64, {1200}, {})},
                                {"w2", model.f32({9, 9, 9})}});
  model.save(tag + "/mp_rank_00_model_states.pt",
             model.dict({{"module", module},
                         {"buffer_names", model.list({model.str("n")})},
                         {"param_shapes", model.list({model.ordered(
                              {{"w", model.size({3})}, {"b", model.size({2})}})})},
                         {"shared_params", model.dict({{"w2", model.str("w")}})},
                         {"ds_version", model.str("0.16.4")}}));
  std::vector<std::vector<float>> parts = {{1, 2, 3, 4}, {5}};
  for (int r = 0; r < ranks_written; ++r) {
    RankFile file;
    save_optim(file, tag + "/zero_pp_rank_" + std::to_string(r) + "_mp_rank_00_optim_states.pt",
               stage(file), parts[static_cast<size_t>(r)]);
  }
}

Node* by_value(RankFile& f) { return f.stage_by_value(2); }
Node* by_name(RankFile& f) { return f.stage_by_name("gradients"); }

TEST(ZeroReader, Stage2ConcatenatesTheRanksAndCutsInParamShapesOrder) {
  Scratch s;
  write_stage2(s / "run/global_step7", by_value);
  put(s / "run/latest", "global_step7");
  Checkpoint ckpt = read_checkpoint(s / "run");
  EXPECT_STREQ(ckpt.format->name, "deepspeed");
  EXPECT_EQ(keys_of(ckpt), (std::vector<std::string>{"w", "b", "n", "w2"}));
  EXPECT_EQ(values_of<float>(ckpt, "w"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(values_of<float>(ckpt, "b"), (std::vector<float>{4, 5}));
  Dtype dtype = Dtype::k_float32;
  EXPECT_EQ(values_of<int64_t>(ckpt, "n", &dtype), (std::vector<int64_t>{1200}));
  EXPECT_EQ(dtype, Dtype::k_int64);
  // The tie is a view of one storage, and `b` spans two rank files: two pieces.
  EXPECT_EQ(as_tensor(dict_get(ckpt.graph.root, "w2"))->storage,
            as_tensor(dict_get(ckpt.graph.root, "w"))->storage);
  EXPECT_EQ(as_tensor(dict_get(ckpt.graph.root, "b"))->storage->pieces.size(), 2u);
  EXPECT_EQ(ckpt.fact("deepspeed_stage"), "2");
  EXPECT_EQ(ckpt.fact("world_size"), "2");
  EXPECT_EQ(ckpt.fact("tag"), "global_step7");
  EXPECT_EQ(ckpt.fact("ds_version"), "0.16.4");
}

TEST(ZeroReader, KeepsOnlyTheResultsStoragesUnlessModuleHoldsTensorsInOtherValues) {
  Scratch s;
  write_stage2(s / "t", by_value);
  Checkpoint plain = read_checkpoint(s / "t");
  EXPECT_EQ(plain.graph.storages().size(), 3u);  // w, b and n: no rank file's storage
  RankFile model;
  Node* extra = model.list({model.f32({6})});
  Node* module = model.ordered({{"w", model.f32({9, 9, 9})}, {"b", model.f32({9, 9})},
                                {"extra", extra}});
  model.save(s / "t/mp_rank_00_model_states.pt",
             model.dict({{"module", module},
                         {"param_shapes", model.list({model.ordered(
                              {{"w", model.size({3})}, {"b", model.size({2})}})})}}));
  Checkpoint ckpt = read_checkpoint(s / "t");
  EXPECT_EQ(keys_of(ckpt), (std::vector<std::string>{"w", "b", "extra"}));
  ASSERT_EQ(ckpt.tensors.size(), 3u);
  float value = 0;
  read_storage_range(*ckpt.tensors[2].storage, 0, reinterpret_cast<uint8_t*>(&value), 4);
  EXPECT_EQ(value, 6.0f);  // the rank file's storage, kept
}

TEST(ZeroReader, ReadsZeroStageEnumPickledByName) {
  Scratch s;
  write_stage2(s / "global_step7", by_name);
  Checkpoint ckpt = read_checkpoint(s / "global_step7");  // a tag folder itself
  EXPECT_EQ(ckpt.fact("deepspeed_stage"), "2");
  EXPECT_EQ(values_of<float>(ckpt, "b"), (std::vector<float>{4, 5}));
}

TEST(ZeroReader, NamesTheMissingRank) {
  Scratch s;
  write_stage2(s / "t", by_value, 1);
  EXPECT_EQ(read_error(s / "t"),
            s / "t" + ": rank 1 is missing: no zero_pp_rank_1_mp_rank_00_optim_states.pt, and "
                      "partition_count in zero_pp_rank_0_mp_rank_00_optim_states.pt says 2 ranks");
}

TEST(ZeroReader, NamesAnExtraStaleRank) {
  Scratch s;
  write_stage2(s / "t", by_value);
  std::filesystem::copy_file(s / "t/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                             s / "t/zero_pp_rank_10_mp_rank_00_optim_states.pt");
  EXPECT_EQ(read_error(s / "t"),
            s / "t/zero_pp_rank_10_mp_rank_00_optim_states.pt" +
                ": an extra rank: partition_count in zero_pp_rank_0_mp_rank_00_optim_states.pt "
                "says 2 ranks (0 to 1); a stale file from another run?");
}

TEST(ZeroReader, RefusesTensorParallelMoeAndNvmeOffloadByTheirFiles) {
  Scratch s;
  write_stage2(s / "t", by_value);
  put(s / "t/mp_rank_01_model_states.pt", "x");
  EXPECT_EQ(read_error(s / "t"), s / "t/mp_rank_01_model_states.pt" +
                                     ": tensor or pipeline parallelism (mp_rank 01) is not "
                                     "supported yet: only mp_rank 00 is read");
  std::filesystem::remove(s / "t/mp_rank_01_model_states.pt");
  put(s / "t/expp_rank_0_mp_rank_00_optim_states.pt", "x");
  EXPECT_EQ(read_error(s / "t"), s / "t/expp_rank_0_mp_rank_00_optim_states.pt" +
                                     ": MoE expert files are not supported yet");
  std::filesystem::remove(s / "t/expp_rank_0_mp_rank_00_optim_states.pt");
  put(s / "u/mp_rank_00_model_states.pt", "x");
  std::filesystem::create_directories(s / "u/zero/embed.weight");
  EXPECT_EQ(read_error(s / "u"), s / "u/zero" +
                                     ": a universal checkpoint (ds_to_universal.py: one folder per "
                                     "parameter) is not supported yet: convert the tag it was made "
                                     "from");
  std::filesystem::create_directories(s / "t/offloaded_tensors");
  EXPECT_NE(read_error(s / "t").find("offloaded_tensors: NVMe-offloaded"), std::string::npos);
}

TEST(ZeroReader, RefusesACodeRunningGlobalInAnyPickle) {
  Scratch s;
  write_stage2(s / "t", by_value);
  RankFile file;
  Node* evil = file.call(file.global("posix", "system"), {file.str("true")});
  save_optim(file, s / "t/zero_pp_rank_1_mp_rank_00_optim_states.pt", file.stage_by_value(2),
             {5}, evil);
  EXPECT_EQ(read_error(s / "t"),
            s / "t/zero_pp_rank_1_mp_rank_00_optim_states.pt" +
                ":archive/data.pkl: global posix.system is no data class DeepSpeed saves: a "
                "pickle that would run code when loaded; refused");
}

TEST(ZeroReader, SizesThatDoNotAddUpAreRefused) {
  Scratch s;
  write_stage2(s / "t", by_value);
  RankFile file;  // rank 1 lost its one element
  save_optim(file, s / "t/zero_pp_rank_1_mp_rank_00_optim_states.pt", file.stage_by_value(2), {});
  EXPECT_EQ(read_error(s / "t"), s / "t" + ": param group 0: sizes do not add up: the 2 ranks' "
                                           "fp32 partitions hold 4 elements, param_shapes[0] "
                                           "needs 5");
}

// Stage 3, two ranks: w (3 elements) in ceil slices of 2, rank 1's second
// element padding (garbage); a frozen f (1 element) from each rank's slice.
TEST(ZeroReader, Stage3TakesOneCeilSliceFromEveryRankAndDropsThePadding) {
  Scratch s;
  const float garbage = 1e30f;
  std::vector<std::vector<float>> flats = {{1, 2}, {3, garbage}};
  std::vector<std::vector<float>> frozen = {{7}, {garbage}};
  for (int r = 0; r < 2; ++r) {
    RankFile model;
    Node* module = model.ordered({{"w", model.f32({})}, {"f", model.f32({})}});
    model.save(s / "t/zero_pp_rank_" + std::to_string(r) + "_mp_rank_00_model_states.pt",
               model.dict({{"module", module},
                           {"buffer_names", model.list({})},
                           {"param_shapes", model.list({model.ordered({{"w", model.size({3})}})})},
                           {"frozen_param_shapes", model.ordered({{"f", model.size({1})}})},
                           {"frozen_param_fragments",
                            model.ordered({{"f", model.f32(frozen[static_cast<size_t>(r)])}})}}));
    RankFile file;
    Node* osd = file.dict({{"zero_stage", file.stage_by_name("weights")},
                           {"partition_count", file.integer(2)},
                           {"fp32_flat_groups", file.list({file.f32(flats[static_cast<size_t>(r)])})}});
    file.save(s / "t/zero_pp_rank_" + std::to_string(r) + "_mp_rank_00_optim_states.pt",
              file.dict({{"optimizer_state_dict", osd}}));
  }
  Checkpoint ckpt = read_checkpoint(s / "t");
  EXPECT_EQ(keys_of(ckpt), (std::vector<std::string>{"w", "f"}));
  EXPECT_EQ(values_of<float>(ckpt, "w"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(values_of<float>(ckpt, "f"), (std::vector<float>{7}));
  EXPECT_EQ(ckpt.fact("deepspeed_stage"), "3");
}

TEST(ZeroReader, ClaimsRunAndTagFoldersButNotOthers) {
  Scratch s;
  const SourceFormat* format = nullptr;
  for (const SourceFormat& f : source_formats()) {
    if (std::strcmp(f.name, "deepspeed") == 0) {
      format = &f;
    }
  }
  ASSERT_NE(format, nullptr);
  put(s / "empty/readme.txt", "x");
  put(s / "run/latest", "global_step1");
  put(s / "run/global_step1/mp_rank_00_model_states.pt", "x");
  EXPECT_FALSE(format->claims_folder(s / "empty", ReadOptions{}));
  EXPECT_TRUE(format->claims_folder(s / "run", ReadOptions{}));
  EXPECT_TRUE(format->claims_folder(s / "run/global_step1", ReadOptions{}));
  EXPECT_EQ(read_error(s / "run", "global_step9"),
            s / "run" + ": --tag global_step9: no such tag folder (tags here: global_step1)");
  put(s / "blank/latest", "\n");
  put(s / "blank/global_step1/mp_rank_00_model_states.pt", "x");
  EXPECT_EQ(read_error(s / "blank"),
            s / "blank/latest" + ": is empty: give --tag (tags here: global_step1)");
  EXPECT_EQ(read_error(s / "run", "../x"),
            s / "run" + ": --tag: tag '../x' is no folder name inside the run folder");
}

TEST(ZeroReader, AnUnreadableLatestIsNamedWithItsCause) {
  // Root reads a file whatever its permissions, so the read runs in a child
  // (a death test's fork) that makes itself `nobody` first when it is root,
  // as CI is; the child exits 0 only when the message is the one expected.
  Scratch s;
  put(s / "run/latest", "global_step1");
  put(s / "run/global_step1/mp_rank_00_model_states.pt", "x");
  ASSERT_EQ(::chmod(s.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod((s / "run/latest").c_str(), 0), 0);
  const std::string expected = s / "run/latest" +
                               ": cannot be read (Permission denied): give --tag TAG (tags "
                               "here: global_step1)";
  EXPECT_EXIT(
      {
        constexpr uid_t k_nobody = 65534;
        if (::geteuid() == 0 && (::setgid(k_nobody) != 0 || ::setuid(k_nobody) != 0)) {
          std::_Exit(2);
        }
        std::string got = read_error(s / "run");
        std::fprintf(stderr, "got: %s\n", got.c_str());
        std::_Exit(got == expected ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(ZeroReader, ARunWithoutLatestIsReadWithTagAndExplainedWithout) {
  // save_checkpoint(save_latest=False) writes no `latest`; nor does a copy
  // of the tag folders alone.
  Scratch s;
  write_stage2(s / "run/global_step7", by_value);
  put(s / "run/global_step3/mp_rank_00_model_states.pt", "x");
  EXPECT_EQ(folder_format(s / "run", ReadOptions{}), nullptr);  // a zoo, for `batch`
  EXPECT_EQ(read_error(s / "run"),
            s / "run" +
                ": a DeepSpeed run folder with no `latest` file naming the tag to read (saved "
                "with save_latest=False, or copied without it): give --tag TAG, or the tag "
                "folder itself (tags here: global_step3, global_step7)");
  Checkpoint ckpt = read_checkpoint(s / "run", ReadOptions{"global_step7"});
  EXPECT_STREQ(ckpt.format->name, "deepspeed");
  EXPECT_EQ(ckpt.fact("tag"), "global_step7");
  EXPECT_EQ(values_of<float>(ckpt, "w"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(read_error(s / "run", "global_step9"),
            s / "run" + ": --tag global_step9: no such tag folder (tags here: global_step3, "
                        "global_step7)");
}

}  // namespace
}  // namespace ckpt::test
