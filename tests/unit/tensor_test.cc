// TensorRef's pieces that hold no graph: Dims, sizes and strides kept inline
// up to six dimensions and on the heap past them.
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

}  // namespace
}  // namespace ckpt::test
