// The safetensors reader (src/formats/safetensors.cc) on files written here
// byte by byte, read from memory through the same table of formats as a
// file: the graph it builds (an OrderedDict of rebuild calls over one
// storage per tensor), the metadata facts, the restored aliases, and its
// refusals located in the file.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "ckpt/checkpoint.h"
#include "ckpt/source.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

// A safetensors file: `json` padded with spaces to a multiple of 8, then `data`.
std::string file_of(std::string json, const std::string& data) {
  json.append((8 - json.size() % 8) % 8, ' ');
  return le64(json.size()) + json + data;
}

std::string read_error(const std::string& file) {
  try {
    read_checkpoint_bytes("m.safetensors", span_of(file));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Two f32 elements 1.0, 2.0; a BF16 scalar; an empty I64 tensor; metadata.
const std::string k_json =
    R"({"__metadata__":{"format":"pt"},)"
    R"("b.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},)"
    R"("a.scale":{"dtype":"BF16","shape":[],"data_offsets":[8,10]},)"
    R"("a.empty":{"dtype":"I64","shape":[0,3],"data_offsets":[10,10]}})";
const std::string k_data = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40\x80\x3f", 10);

TEST(SafetensorsFormat, BuildsAStateDictOfRebuildCallsInHeaderOrder) {
  std::string file = file_of(k_json, k_data);
  Checkpoint ckpt = read_checkpoint_bytes("m.safetensors", span_of(file));
  EXPECT_STREQ(ckpt.format->name, "safetensors");
  EXPECT_STREQ(format_name(ckpt), "safetensors");
  const Node* root = ckpt.graph.root;
  ASSERT_EQ(root->kind, NodeKind::k_dict);
  ASSERT_NE(root->callable, nullptr);
  EXPECT_TRUE(root->callable->is_global("collections", "OrderedDict"));
  ASSERT_EQ(root->entries.size(), 3u);
  EXPECT_EQ(root->entries[0].first->text, "b.weight");
  EXPECT_EQ(root->entries[1].first->text, "a.scale");
  EXPECT_EQ(root->entries[2].first->text, "a.empty");
  ASSERT_EQ(ckpt.tensors.size(), 3u);
  ASSERT_EQ(ckpt.graph.storages().size(), 3u);

  const TensorRef& weight = ckpt.tensors[0];
  EXPECT_TRUE(weight.node->callable->is_global("torch._utils", "_rebuild_tensor_v2"));
  EXPECT_EQ(weight.dtype, Dtype::k_float32);
  EXPECT_EQ(weight.sizes, (Dims{1, 2}));
  EXPECT_EQ(weight.strides, (Dims{2, 1}));
  EXPECT_EQ(weight.offset, 0);
  EXPECT_FALSE(weight.requires_grad);
  EXPECT_EQ(weight.storage->numel, 2);
  EXPECT_TRUE(weight.storage->type->is_global("torch", "FloatStorage"));
  EXPECT_EQ(weight.storage->location->text, "cpu");
  EXPECT_EQ(weight.storage->file_offset, 8 + (file.size() - 8 - k_data.size()));
  EXPECT_EQ(std::memcmp(weight.storage->bytes.data, k_data.data(), 8), 0);
  EXPECT_EQ(weight.storage->bytes.size, 8u);

  const TensorRef& scale = ckpt.tensors[1];
  EXPECT_EQ(scale.dtype, Dtype::k_bfloat16);
  EXPECT_TRUE(scale.sizes.empty());
  EXPECT_EQ(scale.numel(), 1);
  EXPECT_TRUE(scale.storage->type->is_global("torch", "BFloat16Storage"));

  const TensorRef& empty = ckpt.tensors[2];
  EXPECT_EQ(empty.dtype, Dtype::k_int64);
  EXPECT_EQ(empty.sizes, (Dims{0, 3}));
  EXPECT_EQ(empty.storage->numel, 0);
  EXPECT_EQ(empty.storage->bytes.size, 0u);

  EXPECT_EQ(ckpt.fact("metadata.format"), "pt");
  EXPECT_EQ(ckpt.fact("torch_hint"), "safetensors (no pickle)");
}

TEST(SafetensorsFormat, ReadsADtypeWithNoTypedStorageAsTorch2Does) {
  std::string file =
      file_of(R"({"x":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]}})", "abc");
  Checkpoint ckpt = read_checkpoint_bytes("m.safetensors", span_of(file));
  ASSERT_EQ(ckpt.tensors.size(), 1u);
  const TensorRef& x = ckpt.tensors[0];
  EXPECT_TRUE(x.node->callable->is_global("torch._utils", "_rebuild_tensor_v3"));
  EXPECT_EQ(x.dtype, Dtype::k_float8_e4m3fn);
  EXPECT_EQ(x.storage->dtype, Dtype::k_untyped);
  EXPECT_TRUE(x.storage->type->is_global("torch", "UntypedStorage"));
  EXPECT_EQ(x.storage->numel, 3);
}

TEST(SafetensorsFormat, RestoresARemovedNameAsAViewOfTheKeptStorage) {
  std::string file = file_of(
      R"({"__metadata__":{"head.weight":"embed.weight","format":"pt"},)"
      R"("embed.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
      std::string(8, '\0'));
  Checkpoint ckpt = read_checkpoint_bytes("m.safetensors", span_of(file));
  const Node* root = ckpt.graph.root;
  ASSERT_EQ(root->entries.size(), 2u);
  EXPECT_EQ(root->entries[1].first->text, "head.weight");
  ASSERT_EQ(ckpt.tensors.size(), 2u);
  EXPECT_EQ(ckpt.tensors[0].storage, ckpt.tensors[1].storage);
  EXPECT_EQ(ckpt.tensors[1].sizes, (Dims{2}));
  EXPECT_EQ(ckpt.graph.storages().size(), 1u);
}

TEST(SafetensorsFormat, RefusesAHeaderTheCodecRefusesNamingTheFile) {
  std::string overlapping = file_of(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      std::string(8, '\0'));
  EXPECT_EQ(read_error(overlapping).rfind("m.safetensors: tensor 'b': ", 0), 0u)
      << read_error(overlapping);
  std::string file = file_of(k_json, k_data);
  std::string truncated = file.substr(0, file.size() - 1);
  EXPECT_EQ(read_error(truncated).rfind("m.safetensors: ", 0), 0u) << read_error(truncated);
  EXPECT_NE(read_error(truncated), "no error");
}

TEST(SafetensorsFormat, RefusesADtypeWithNoCkptDtypeNamingTheTensor) {
  std::string file = file_of(R"({"q":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[0,2]}})",
                             std::string(2, '\0'));
  EXPECT_EQ(read_error(file),
            "m.safetensors: tensor 'q': dtype F8_E8M0 has no PyTorch dtype ckpt-convert reads "
            "(F4, F6_* and F8_E8M0 are not supported)");
}

TEST(SafetensorsFormat, RefusesAGitLfsPointer) {
  std::string pointer =
      "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 12345\n";
  EXPECT_EQ(read_error(pointer),
            "m.safetensors: not a PyTorch checkpoint: a git-lfs pointer, not the file: run git "
            "lfs pull");
}

}  // namespace
}  // namespace ckpt::test
