// The DCP reader (src/formats/dcp.cc) on the small checkpoints of
// dcp_pickles.h written to a folder: the graph it builds (flat for torch
// 1.13, nested by planner_data later), each tensor's storage made of its
// chunks' bytes in the `.distcp` files in row-major order, the facts
// `inspect` prints, and the refusals that need files: a missing or truncated
// `.distcp`, a slice that is no torch.save zip.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/source.h"
#include "ckpt/storage_pieces.h"
#include "dcp_pickles.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

void write_run(const Scratch& s, const DcpFiles& files, const std::string& skip = "") {
  for (const auto& [name, bytes] : files) {
    if (name != skip) {
      put(s / ("run/" + name), bytes);
    }
  }
}

std::string read_error(const std::string& path) {
  return error_of([&] { read_checkpoint(path); });
}

// Every byte of `storage`, read through its pieces.
template <typename T>
std::vector<T> values_of(const Storage& storage) {
  std::vector<T> out(storage.bytes.size / sizeof(T));
  read_storage_range(storage, 0, reinterpret_cast<uint8_t*>(out.data()), storage.bytes.size);
  return out;
}

TEST(DcpReader, ClaimsAFolderByItsMetadataFile) {
  Scratch s;
  write_run(s, k_dcp_rows_113);
  const SourceFormat* format = folder_format(s / "run", ReadOptions{});
  ASSERT_NE(format, nullptr);
  EXPECT_STREQ(format->name, "torch-dcp");
  EXPECT_EQ(folder_format(s.path(), ReadOptions{}), nullptr);
}

TEST(DcpReader, ShardsWithoutMetadataAreExplained) {
  // torch writes .metadata last, and `cp dir/*` leaves the hidden file out.
  Scratch s;
  write_run(s, k_dcp_nested_20, ".metadata");
  EXPECT_EQ(folder_format(s / "run", ReadOptions{}), nullptr);
  EXPECT_EQ(read_error(s / "run"),
            s / "run" +
                ": a torch Distributed Checkpoint without its `.metadata` (2 .distcp files here): "
                "the save did not finish (torch writes `.metadata` last), or the copy left the "
                "hidden file out (`cp dir/*` does); copy the whole folder again");
}

TEST(DcpReader, Torch113RowShardsReadAsOneFlatStateDict) {
  Scratch s;
  write_run(s, k_dcp_rows_113);
  Checkpoint ckpt = read_checkpoint(s / "run");
  EXPECT_STREQ(format_name(ckpt), "dcp");
  const Node* root = ckpt.graph.root;
  ASSERT_EQ(root->kind, NodeKind::k_dict);
  ASSERT_EQ(root->entries.size(), 2u);
  EXPECT_EQ(root->entries[0].first->text.str(), "w");
  ASSERT_EQ(ckpt.tensors.size(), 2u);
  const TensorRef& w = ckpt.tensors[0];
  EXPECT_EQ(w.sizes, Dims({4, 3}));
  // Two row blocks in two files: two pieces, 0..11 in order.
  ASSERT_TRUE(has_pieces(*w.storage));
  EXPECT_EQ(w.storage->pieces.size(), 2u);
  std::vector<float> expected;
  for (int i = 0; i < 12; ++i) {
    expected.push_back(static_cast<float>(i));
  }
  EXPECT_EQ(values_of<float>(*w.storage), expected);
  // One chunk: a plain range of its file.
  const TensorRef& b = ckpt.tensors[1];
  EXPECT_FALSE(has_pieces(*b.storage));
  EXPECT_EQ(values_of<int64_t>(*b.storage), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(ckpt.fact("dcp_profile"), "1.13");
  EXPECT_EQ(ckpt.fact("world_size"), "2");
  EXPECT_EQ(ckpt.fact("planner_data"), "none (flat keys)");
  // .metadata, then the .distcp files in rank order.
  ASSERT_EQ(ckpt.files.size(), 4u);
  EXPECT_EQ(ckpt.files[0].path(), s / "run/.metadata");
}

TEST(DcpReader, BoxesAssembleRowByRowAndPlannerDataNests) {
  Scratch s;
  write_run(s, k_dcp_boxes_23);
  Checkpoint ckpt = read_checkpoint(s / "run");
  const Node* root = ckpt.graph.root;
  const Node* model = dict_get(root, "model");
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->kind, NodeKind::k_dict);
  std::optional<TensorRef> m = as_tensor(dict_get(model, "m"));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sizes, Dims({3, 4}));
  std::vector<float> expected;
  for (int i = 0; i < 12; ++i) {
    expected.push_back(static_cast<float>(i));
  }
  EXPECT_EQ(values_of<float>(*m->storage), expected);
  std::optional<TensorRef> scalar = as_tensor(dict_get(model, "s"));
  ASSERT_TRUE(scalar);
  EXPECT_EQ(scalar->sizes, Dims());
  EXPECT_EQ(values_of<float>(*scalar->storage), std::vector<float>{2.5f});
  EXPECT_EQ(dict_get(root, "step")->integer, 3);
  const Node* lrs = dict_get(root, "lrs");
  ASSERT_EQ(lrs->kind, NodeKind::k_list);
  EXPECT_EQ(lrs->items.size(), 2u);
  EXPECT_EQ(ckpt.fact("dcp_profile"), "2.3+");
  EXPECT_EQ(ckpt.fact("dcp_version"), "1.0.0");
  EXPECT_EQ(ckpt.fact("world_size"), "4");
}

TEST(DcpReader, WarnsOfFilesMetadataDoesNotName) {
  Scratch s;
  write_run(s, k_dcp_nested_20);
  put(s / "run/__7_0.distcp", "stale");
  put(s / "run/common.pt", "megatron");
  Checkpoint ckpt = read_checkpoint(s / "run");
  ASSERT_EQ(ckpt.warnings.size(), 1u);
  EXPECT_EQ(ckpt.warnings[0], "2 file(s) beside " + s / "run/.metadata" +
                                  " that it does not name, not read: '__7_0.distcp', "
                                  "'common.pt'");
  EXPECT_EQ(ckpt.fact("unsupported"), "2 file(s) .metadata does not name, not read");
  EXPECT_EQ(ckpt.files.size(), 3u);  // .metadata and the two it names
}

TEST(DcpReader, RefusesAMissingDistcpNamingIt) {
  Scratch s;
  write_run(s, k_dcp_nested_20, "__1_0.distcp");
  EXPECT_EQ(read_error(s / "run"),
            s / "run/__1_0.distcp" +
                ": missing: .metadata stores items there ('a.x'…), but there is no such file "
                "(a rank's files not copied?)");
}

TEST(DcpReader, RefusesATruncatedDistcpNamingItAndTheItem) {
  Scratch s;
  write_run(s, k_dcp_nested_20);
  for (const auto& [name, bytes] : k_dcp_nested_20) {
    if (name == "__1_0.distcp") {
      put(s / "run/__1_0.distcp", bytes.substr(0, bytes.size() - 10));
      EXPECT_EQ(read_error(s / "run"),
                s / "run/__1_0.distcp" + ": item 'a.x' at bytes [0, " +
                    std::to_string(bytes.size()) + ") runs past the end of the file (" +
                    std::to_string(bytes.size() - 10) + " bytes): truncated file?");
    }
  }
}

TEST(DcpReader, RefusesASliceThatIsNoTorchSaveZip) {
  Scratch s;
  write_run(s, k_dcp_nested_20);
  for (const auto& [name, bytes] : k_dcp_nested_20) {
    if (name == "__1_0.distcp") {
      put(s / "run/__1_0.distcp", std::string(bytes.size(), 'x'));
    }
  }
  EXPECT_EQ(read_error(s / "run"),
            s / "run/__1_0.distcp" +
                "@0: item 'a.x': not a torch.save zip (as DCP's FileSystemWriter writes every "
                "item)");
}

}  // namespace
}  // namespace ckpt::test
