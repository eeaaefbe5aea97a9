// TensorRef's pieces that hold no graph: Dims, sizes and strides kept inline
// up to six dimensions and on the heap past them; and the tensor nodes
// make_tensor builds, read back by as_tensor.
#include <gtest/gtest.h>

#include <vector>

#include "ckpt/tensor.h"

namespace ckpt::test {
namespace {

TEST(Dims, GrowsPastItsInlineRoomKeepingEveryValue) {
  Dims dims;
  std::vector<int64_t> expected;
  for (int64_t d = 0; d < 9; ++d) {  // 6 inline, then the heap
    dims.push_back(d * 10 + 1);
    expected.push_back(d * 10 + 1);
    ASSERT_EQ(dims.size(), expected.size());
    EXPECT_EQ(dims.vec(), expected);
  }
  Dims copy = dims;
  EXPECT_EQ(copy, dims);
  copy[8] = 0;
  EXPECT_NE(copy, dims);
  EXPECT_EQ(dims[8], 81);

  Dims shrunk = dims;
  shrunk = Dims{2, 3};  // from the heap back to inline
  EXPECT_EQ(shrunk.vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(shrunk, Dims(std::vector<int64_t>{2, 3}));
  EXPECT_NE(shrunk, Dims{2});
  EXPECT_TRUE(Dims().empty());
}

TEST(MakeTensor, BuildsARebuildCallAsTensorReadsBackContiguous) {
  Graph graph;
  Storage* storage = make_tensor_storage(graph, Dtype::k_float16, 24, "w");
  Node* node = make_tensor(graph, storage, Dtype::k_float16, {2, 3, 4});
  std::optional<TensorRef> ref = as_tensor(node);
  ASSERT_TRUE(ref);
  EXPECT_TRUE(node->callable->is_global("torch._utils", "_rebuild_tensor_v2"));
  EXPECT_TRUE(storage->type->is_global("torch", "HalfStorage"));
  EXPECT_EQ(storage->location->text, "cpu");
  EXPECT_EQ(ref->storage, storage);
  EXPECT_EQ(ref->dtype, Dtype::k_float16);
  EXPECT_EQ(ref->sizes, (Dims{2, 3, 4}));
  EXPECT_EQ(ref->strides, (Dims{12, 4, 1}));
  EXPECT_EQ(ref->byte_extent(), 48u);
}

TEST(MakeTensor, BuildsAZeroDimAndAnEmptyTensor) {
  Graph graph;
  std::optional<TensorRef> scalar =
      as_tensor(make_tensor(graph, make_tensor_storage(graph, Dtype::k_int64, 1, "s"),
                            Dtype::k_int64, {}));
  ASSERT_TRUE(scalar);
  EXPECT_TRUE(scalar->sizes.empty());
  EXPECT_TRUE(scalar->strides.empty());
  EXPECT_EQ(scalar->numel(), 1);
  std::optional<TensorRef> empty =
      as_tensor(make_tensor(graph, make_tensor_storage(graph, Dtype::k_float32, 0, "e"),
                            Dtype::k_float32, {3, 0, 2}));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->strides, (Dims{2, 2, 1}));
  EXPECT_EQ(empty->numel(), 0);
}

TEST(MakeTensor, UsesAnUntypedStorageAndV3ForADtypeWithNoStorageClass) {
  Graph graph;
  Storage* storage = make_tensor_storage(graph, Dtype::k_uint16, 4, "u");
  EXPECT_EQ(storage->dtype, Dtype::k_untyped);
  EXPECT_EQ(storage->numel, 8);
  std::optional<TensorRef> ref = as_tensor(make_tensor(graph, storage, Dtype::k_uint16, {4}));
  ASSERT_TRUE(ref);
  EXPECT_TRUE(ref->node->callable->is_global("torch._utils", "_rebuild_tensor_v3"));
  EXPECT_EQ(ref->dtype, Dtype::k_uint16);
}

TEST(MakeStateDict, BuildsAnOrderedDictInTheGivenOrder) {
  Graph graph;
  Node* one = graph.make_int(1);
  Node* dict = make_state_dict(graph, {{"z", one}, {"a", one}});
  ASSERT_EQ(dict->kind, NodeKind::k_dict);
  EXPECT_TRUE(dict->callable->is_global("collections", "OrderedDict"));
  ASSERT_EQ(dict->entries.size(), 2u);
  EXPECT_EQ(dict->entries[0].first->text, "z");
  EXPECT_EQ(dict->entries[1].first->text, "a");
  EXPECT_EQ(dict->entries[1].second, one);
}

}  // namespace
}  // namespace ckpt::test
