// The DCP `.metadata` decoder (src/formats/dcp_metadata.cc) on pickles that
// tools/sharded_fixtures/dcp.py's stand-ins write under the class paths of
// torch 1.13, 2.0-2.2 and 2.3+ (dcp_pickles.h): what each decodes to, and the
// exact refusals of a code-running global, overlapping or missing chunks and
// a stream transform; and the nesting `dcp_to_torch_save` rebuilds.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ckpt/dcp_metadata.h"
#include "dcp_pickles.h"
#include "python_pickles.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

const std::string& metadata_of(const DcpFiles& files) {
  for (const auto& [name, bytes] : files) {
    if (name == ".metadata") {
      return bytes;
    }
  }
  throw std::runtime_error("no .metadata");
}

DcpMetadata parse(const DcpFiles& files) {
  return parse_dcp_metadata(span_of(metadata_of(files)), "run/.metadata");
}

std::string parse_error(const DcpFiles& files) {
  return error_of([&] { parse(files); });
}

std::string parse_error(const std::string& bytes) {
  return error_of([&] { parse_dcp_metadata(span_of(bytes), "run/.metadata"); });
}

TEST(DcpMetadata, DecodesTorch113RowShards) {
  DcpMetadata m = parse(k_dcp_rows_113);
  EXPECT_EQ(m.profile, "1.13");
  EXPECT_FALSE(m.has_planner_data);
  EXPECT_FALSE(m.has_storage_meta);
  ASSERT_EQ(m.items.size(), 2u);
  const DcpItem& w = m.items[0];
  EXPECT_EQ(w.fqn, "w");
  EXPECT_TRUE(w.is_tensor);
  EXPECT_EQ(w.dtype, Dtype::k_float32);
  EXPECT_EQ(w.size, Dims({4, 3}));
  ASSERT_EQ(w.chunks.size(), 2u);
  EXPECT_EQ(w.chunks[1].offsets, Dims({2, 0}));
  EXPECT_EQ(w.chunks[1].sizes, Dims({2, 3}));
  EXPECT_EQ(w.chunks[1].where.relative_path, "__1_0.distcp");
  EXPECT_EQ(w.chunks[1].where.offset, 0u);
  EXPECT_GT(w.chunks[1].where.length, 0u);
  EXPECT_EQ(m.items[1].dtype, Dtype::k_int64);
  EXPECT_TRUE(m.items[1].path.empty());
  EXPECT_EQ(m.files, (std::vector<std::string>{"__0_0.distcp", "__0_1.distcp", "__1_0.distcp"}));
}

TEST(DcpMetadata, DecodesTorch23BoxesPlannerDataAndVersion) {
  DcpMetadata m = parse(k_dcp_boxes_23);
  EXPECT_EQ(m.profile, "2.3+");
  EXPECT_EQ(m.version, "1.0.0");
  EXPECT_TRUE(m.has_planner_data);
  ASSERT_EQ(m.items.size(), 4u);
  const DcpItem& box = m.items[0];
  EXPECT_EQ(box.fqn, "model.m");
  // 3 rows over 2 mesh rows, 4 columns over 2: four boxes, none empty.
  ASSERT_EQ(box.chunks.size(), 4u);
  EXPECT_EQ(box.chunks[3].offsets, Dims({2, 2}));
  EXPECT_EQ(box.chunks[3].sizes, Dims({1, 2}));
  ASSERT_EQ(box.path.size(), 2u);
  EXPECT_EQ(box.path[0].key, "model");
  EXPECT_EQ(box.path[1].key, "m");
  const DcpItem& scalar = m.items[1];
  EXPECT_EQ(scalar.size, Dims());
  ASSERT_EQ(scalar.chunks.size(), 1u);
  EXPECT_EQ(scalar.chunks[0].where.relative_path.substr(0, 4), "__3_");
  EXPECT_FALSE(m.items[2].is_tensor);  // step
}

TEST(DcpMetadata, DecodesTorch20WithTensorPropertiesInShard) {
  DcpMetadata m = parse(k_dcp_nested_20);
  EXPECT_EQ(m.profile, "2.0-2.2");
  ASSERT_EQ(m.items.size(), 2u);
  EXPECT_EQ(m.items[0].chunks[0].where.relative_path, "__1_0.distcp");  // not rank 0's
  EXPECT_FALSE(m.items[1].is_tensor);
  EXPECT_EQ(m.items[1].path.size(), 1u);
}

TEST(DcpMetadata, RefusesACodeRunningGlobalNamingIt) {
  EXPECT_EQ(parse_error(k_dcp_evil),
            "run/.metadata: global posix.system is not a DCP class or its data: refused "
            "(nothing of the pickle is run); a .metadata names only "
            "torch.distributed.checkpoint classes, torch.Size, dtypes and PosixPath");
}

TEST(DcpMetadata, RefusesOverlappingChunks) {
  EXPECT_EQ(parse_error(k_dcp_overlap),
            "run/.metadata: tensor 'w': chunk at offsets (1, 0) of sizes (2, 3) overlaps the "
            "chunk at offsets (0, 0) of sizes (2, 3)");
}

TEST(DcpMetadata, RefusesChunksThatDoNotCoverTheTensor) {
  EXPECT_EQ(parse_error(k_dcp_uncovered),
            "run/.metadata: tensor 'w': its chunks hold 6 of its 12 elements: they do not "
            "cover the tensor");
}

TEST(DcpMetadata, RefusesAStreamTransformNamingIt) {
  EXPECT_EQ(parse_error(k_dcp_transform),
            "run/.metadata: storage_data['a.x']: stored through the stream transform "
            "'stream.zstd/1' (torch >= 2.7 _extensions, e.g. zstd): not supported; save "
            "without _extensions, or load and re-save it in Python");
}

TEST(DcpMetadata, RefusesWhatIsNoMetadata) {
  EXPECT_EQ(parse_error(k_dict_list), "run/.metadata: the pickle holds a dict, not a DCP Metadata");
  EXPECT_EQ(parse_error(std::string("\x80\x04", 2)).rfind("run/.metadata@", 0), 0u);
}

TEST(DcpMetadata, RebuildsTheNestingAsSetElementDoes) {
  DcpMetadata m;
  auto item = [](std::string fqn, std::vector<DcpPathStep> path) {
    DcpItem out;
    out.fqn = std::move(fqn);
    out.path = std::move(path);
    return out;
  };
  m.items.push_back(item("o.g.1.lr", {{false, 0, "o"}, {false, 0, "g"}, {true, 1, ""},
                                      {false, 0, "lr"}}));
  m.items.push_back(item("o.g.0.lr", {{false, 0, "o"}, {false, 0, "g"}, {true, 0, ""},
                                      {false, 0, "lr"}}));
  m.items.push_back(item("flat", {}));
  Graph g;
  std::vector<Node*> leaves = {g.make_int(2), g.make_int(1), g.make_int(3)};
  const Node* root = build_dcp_nested(g, m, leaves, "run/.metadata");
  ASSERT_EQ(root->kind, NodeKind::k_dict);
  ASSERT_EQ(root->entries.size(), 2u);
  const Node* groups = dict_get(dict_get(root, "o"), "g");
  ASSERT_EQ(groups->kind, NodeKind::k_list);
  ASSERT_EQ(groups->items.size(), 2u);
  EXPECT_EQ(dict_get(groups->items[0], "lr")->integer, 1);
  EXPECT_EQ(dict_get(groups->items[1], "lr")->integer, 2);
  EXPECT_EQ(dict_get(root, "flat")->integer, 3);

  m.items.push_back(item("o.g", {{false, 0, "o"}, {false, 0, "g"}}));
  leaves.push_back(g.make_int(4));
  try {
    build_dcp_nested(g, m, leaves, "run/.metadata");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "run/.metadata: planner_data['o.g']: another item is already at its place");
  }
}

}  // namespace
}  // namespace ckpt::test
