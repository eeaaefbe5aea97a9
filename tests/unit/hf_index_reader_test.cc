// The HF sharded-checkpoint reader (src/formats/hf_index.cc) on folders of
// safetensors shards written here: one state dict in weight_map order, each
// storage bound to its own shard's map and named by it, the warnings it
// carries, and the refusals that need files.
#include <gtest/gtest.h>

#include <string>

#include "ckpt/checkpoint.h"
#include "ckpt/source.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

// A safetensors file of one F32 tensor `name` of `count` elements (zeros).
std::string shard_of(const std::string& name, int count) {
  std::string json = R"({")" + name + R"(":{"dtype":"F32","shape":[)" + std::to_string(count) +
                     R"(],"data_offsets":[0,)" + std::to_string(4 * count) + "]}}";
  json.append((8 - json.size() % 8) % 8, ' ');
  return le64(json.size()) + json + std::string(4 * count, '\0');
}

std::string read_error(const std::string& path) {
  try {
    read_checkpoint(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

const std::string k_first = "model-00001-of-00002.safetensors";
const std::string k_second = "model-00002-of-00002.safetensors";

TEST(HfIndexReader, ReadsShardsAsOneStateDictInWeightMapOrder) {
  Scratch s;
  put(s / k_first, shard_of("b", 1));
  put(s / k_second, shard_of("a", 2));
  put(s / "model.safetensors.index.json",
      R"({"metadata": {"total_size": 12}, "weight_map": {"a": ")" + k_second + R"(", "b": ")" +
          k_first + R"("}})");
  Checkpoint ckpt = read_checkpoint(s.path());
  EXPECT_EQ(ckpt.path, s / "model.safetensors.index.json");
  EXPECT_STREQ(format_name(ckpt), "hf-index");
  EXPECT_EQ(ckpt.pickle_record, "weight_map");
  EXPECT_EQ(ckpt.storage_records, "");
  EXPECT_TRUE(ckpt.warnings.empty());
  const Node* root = ckpt.graph.root;
  ASSERT_EQ(root->kind, NodeKind::k_dict);
  ASSERT_EQ(root->entries.size(), 2u);
  EXPECT_EQ(root->entries[0].first->text.str(), "a");
  EXPECT_EQ(root->entries[1].first->text.str(), "b");
  // The index, then the shards in the order weight_map first names them.
  ASSERT_EQ(ckpt.files.size(), 3u);
  ASSERT_EQ(ckpt.tensors.size(), 2u);
  const Storage& a = *ckpt.tensors[0].storage;
  const Storage& b = *ckpt.tensors[1].storage;
  EXPECT_EQ(a.file, &ckpt.files[1]);
  EXPECT_EQ(b.file, &ckpt.files[2]);
  EXPECT_EQ(a.file->path(), s / k_second);
  EXPECT_EQ(a.key, s / k_second + ": tensor 'a'");
  EXPECT_EQ(b.key, s / k_first + ": tensor 'b'");
  EXPECT_EQ(a.bytes.data, ckpt.files[1].bytes().data + a.file_offset);
  EXPECT_EQ(a.bytes.size, 8u);
}

TEST(HfIndexReader, WarnsOfUnnamedShardFilesUnlistedTensorsAndAWrongTotalSize) {
  Scratch s;
  put(s / k_first, shard_of("b", 1));
  put(s / k_second, shard_of("a", 2));
  put(s / "model-00003-of-00003.safetensors", shard_of("c", 1));
  std::string index = s / "model.safetensors.index.json";
  put(index, R"({"metadata": {"total_size": 13}, "weight_map": {"b": ")" + k_first + R"("}})");
  // The second shard is named by no tensor: it is a stray file, not read.
  Checkpoint ckpt = read_checkpoint(index);
  ASSERT_EQ(ckpt.warnings.size(), 2u);
  EXPECT_EQ(ckpt.warnings[0], "2 shard file(s) beside " + index +
                                  " that its weight_map does not name, not read: "
                                  "'model-00002-of-00002.safetensors', "
                                  "'model-00003-of-00003.safetensors'");
  EXPECT_EQ(ckpt.warnings[1],
            index + ": metadata.total_size is 13 bytes, but the tensors' storages hold 4");

  // The second shard holds `z` too, which the index does not list.
  put(index, R"({"weight_map": {"a": ")" + k_second + R"("}})");
  std::string two = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("z":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  two.append((8 - two.size() % 8) % 8, ' ');
  put(s / k_second, le64(two.size()) + two + std::string(8, '\0'));
  ckpt = read_checkpoint(index);
  ASSERT_EQ(ckpt.warnings.size(), 2u);
  EXPECT_EQ(ckpt.warnings[1], "shard '" + k_second + "' holds 1 tensor(s) that the weight_map of " +
                                  index + " does not list, left out: 'z'");
  EXPECT_EQ(ckpt.graph.root->entries.size(), 1u);
}

TEST(HfIndexReader, RefusesWhatNeedsTheFilesToTell) {
  Scratch s;
  put(s / k_first, shard_of("b", 1));
  std::string index = s / "model.safetensors.index.json";
  put(index, R"({"weight_map": {"b": ")" + k_first + R"(", "a": ")" + k_second + R"("}})");
  EXPECT_EQ(read_error(index),
            index + ": shard '" + k_second + "' (of tensor 'a'): no such file: " + s / k_second);
  put(index, R"({"weight_map": {"b": ")" + k_first + R"(", "c": ")" + k_first + R"("}})");
  EXPECT_EQ(read_error(index),
            index + ": weight_map: tensor 'c': not in its shard '" + k_first + "'");
  put(s / k_second, shard_of("b", 1));
  put(index, R"({"weight_map": {"b": ")" + k_first + R"(", "x": ")" + k_second + R"("}})");
  EXPECT_EQ(read_error(index), index + ": tensor 'b' is held by two shards, '" + k_first +
                                   "' and '" + k_second + "'");
}

TEST(HfIndexReader, AFolderWithoutAnIndexIsRefused) {
  Scratch s;
  put(s / k_first, shard_of("b", 1));
  EXPECT_EQ(read_error(s.path()),
            s.path() + ": a folder, and no checkpoint ckpt-convert reads: no HF shard index "
                       "(model.safetensors.index.json or pytorch_model.bin.index.json), "
                       "model.safetensors or pytorch_model.bin, no DeepSpeed run (`latest` and "
                       "*_model_states.pt) and no DCP `.metadata`");
}

TEST(HfIndexReader, AFolderOfOneShardIsItsSingleFile) {
  Scratch s;
  put(s / "model.safetensors", shard_of("b", 1));
  Checkpoint ckpt = read_checkpoint(s.path());
  EXPECT_EQ(ckpt.path, s.path() + "/model.safetensors");
  EXPECT_STREQ(format_name(ckpt), "safetensors");
  ASSERT_EQ(ckpt.tensors.size(), 1u);
}

TEST(HfIndexReader, ASafetensorsFileStartingLikeAnIndexIsSafetensors) {
  // Header length 0x227b: the file starts `{"`, and its header names `weight_map`.
  std::string json = R"({"weight_map":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  json.append(0x227b - json.size(), ' ');
  std::string file = le64(json.size()) + json + std::string(4, '\0');
  ASSERT_EQ(file.substr(0, 2), "{\"");
  Checkpoint ckpt = read_checkpoint_bytes("m.safetensors", span_of(file));
  EXPECT_STREQ(format_name(ckpt), "safetensors");
}

TEST(HfIndexReader, AnIndexReadFromMemoryIsRefusedAfterParsing) {
  std::string index = R"({"weight_map": {"a": "x.safetensors"}})";
  try {
    read_checkpoint_bytes("m.safetensors.index.json", span_of(index));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "m.safetensors.index.json: an HF shard index read from memory: its "
                           "shards are files, not read");
  }
}

}  // namespace
}  // namespace ckpt::test
