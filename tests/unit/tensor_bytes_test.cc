// TensorBytes (tensor_bytes.h): a strided tensor's elements come out in
// row-major order, whatever the buffer size, as `tensor.contiguous()` lays
// them out.
#include "ckpt/tensor_bytes.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

namespace ckpt {
namespace {

// A float32 storage holding 0, 1, 2, … and a tensor over it.
struct Fixture {
  std::vector<float> values;
  Storage storage;
  explicit Fixture(size_t count) : values(count) {
    std::iota(values.begin(), values.end(), 0.0f);
    storage.dtype = Dtype::k_float32;
    storage.numel = static_cast<int64_t>(count);
    storage.bytes = {reinterpret_cast<const uint8_t*>(values.data()), count * sizeof(float)};
  }
  TensorRef tensor(int64_t offset, Dims sizes, Dims strides) {
    TensorRef t;
    t.storage = &storage;
    t.dtype = Dtype::k_float32;
    t.offset = offset;
    t.sizes = sizes;
    t.strides = strides;
    return t;
  }
};

// The tensor's elements read `capacity` bytes at a time.
std::vector<float> read_all(const TensorRef& t, uint64_t capacity) {
  TensorBytes bytes(t);
  std::vector<uint8_t> out(bytes.size() + capacity);
  uint64_t done = 0;
  while (uint64_t n = bytes.read(out.data() + done, capacity)) {
    EXPECT_EQ(n % 4, 0u);
    done += n;
  }
  EXPECT_EQ(done, bytes.size());
  std::vector<float> values(done / 4);
  if (done > 0) {  // memcpy from or to nullptr is undefined even for 0 bytes
    std::memcpy(values.data(), out.data(), done);
  }
  return values;
}

TEST(TensorBytes, ContiguousIsOneRange) {
  Fixture f(12);
  TensorRef t = f.tensor(2, {2, 3}, {3, 1});
  EXPECT_TRUE(TensorBytes(t).is_one_range());
  EXPECT_EQ(TensorBytes(t).storage_start(), 8u);
  EXPECT_EQ(read_all(t, 8), (std::vector<float>{2, 3, 4, 5, 6, 7}));
}

TEST(TensorBytes, TransposeInAnyChunkSize) {
  Fixture f(12);
  TensorRef t = f.tensor(0, {4, 3}, {1, 4});  // a (3, 4) matrix transposed
  EXPECT_FALSE(TensorBytes(t).is_one_range());
  std::vector<float> want{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
  for (uint64_t capacity : {4u, 8u, 12u, 20u, 1024u}) {
    EXPECT_EQ(read_all(t, capacity), want) << capacity;
  }
}

TEST(TensorBytes, StridedSliceRunsSplitAcrossReads) {
  Fixture f(30);
  TensorRef t = f.tensor(5, {3, 4}, {8, 1});  // rows of 4 out of rows of 8
  std::vector<float> want{5, 6, 7, 8, 13, 14, 15, 16, 21, 22, 23, 24};
  for (uint64_t capacity : {4u, 12u, 24u, 4096u}) {
    EXPECT_EQ(read_all(t, capacity), want) << capacity;
  }
}

TEST(TensorBytes, ExpandedZeroStrideAndScalarAndEmpty) {
  Fixture f(4);
  EXPECT_EQ(read_all(f.tensor(1, {2, 3}, {1, 0}), 8), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(read_all(f.tensor(3, {}, {}), 4), (std::vector<float>{3}));
  TensorRef empty = f.tensor(0, {0, 3}, {3, 1});
  EXPECT_EQ(TensorBytes(empty).size(), 0u);
  EXPECT_TRUE(read_all(empty, 8).empty());
}

}  // namespace
}  // namespace ckpt
