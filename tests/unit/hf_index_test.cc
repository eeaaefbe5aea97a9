// The HF shard index parser (include/ckpt/hf_index.h) on indexes written
// here: weight_map kept in the index's order, the shards each once in order of
// first mention, metadata.total_size, and every refusal by its exact message,
// which names the index first.
#include <gtest/gtest.h>

#include <string>

#include "ckpt/error.h"
#include "ckpt/hf_index.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

const std::string k_name = "m/model.safetensors.index.json";

std::string parse_error(const std::string& json, const std::string& name = k_name) {
  try {
    parse_hf_index(span_of(json), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(HfIndex, KeepsWeightMapOrderAndShardsInFirstMentionOrder) {
  std::string json = R"({"metadata": {"total_size": 96, "format": "pt"},
    "weight_map": {"z.weight": "model-00002-of-00002.safetensors",
                   "a.weight": "model-00001-of-00002.safetensors",
                   "m.bias": "model-00002-of-00002.safetensors"}})";
  HfIndex index = parse_hf_index(span_of(json), k_name);
  EXPECT_EQ(index.format, HfShardFormat::k_safetensors);
  ASSERT_EQ(index.weight_map.size(), 3u);
  EXPECT_EQ(index.weight_map[0].first, "z.weight");
  EXPECT_EQ(index.weight_map[1].first, "a.weight");
  EXPECT_EQ(index.weight_map[2].second, "model-00002-of-00002.safetensors");
  EXPECT_EQ(index.shards, (std::vector<std::string>{"model-00002-of-00002.safetensors",
                                                     "model-00001-of-00002.safetensors"}));
  ASSERT_TRUE(index.total_size.has_value());
  EXPECT_EQ(*index.total_size, 96u);
  EXPECT_FALSE(index.total_size_unusable);
}

TEST(HfIndex, NoMetadataIsFineAndAFractionalTotalSizeIsNotChecked) {
  HfIndex index = parse_hf_index(span_of(std::string(R"({"weight_map": {"a": "x.bin"}})")),
                                 "pytorch_model.bin.index.json");
  EXPECT_EQ(index.format, HfShardFormat::k_bin);
  EXPECT_FALSE(index.total_size.has_value());
  EXPECT_FALSE(index.total_size_unusable);
  index = parse_hf_index(
      span_of(std::string(R"({"metadata": {"total_size": 12.125}, "weight_map": {"a": "x.bin"}})")),
      "pytorch_model.bin.index.json");
  EXPECT_FALSE(index.total_size.has_value());
  EXPECT_TRUE(index.total_size_unusable);
}

TEST(HfIndex, AnotherIndexNameTakesItsShardsExtension) {
  HfIndex index = parse_hf_index(span_of(std::string(R"({"weight_map": {"a": "sub/x.bin"}})")),
                                 "weights.index.json");
  EXPECT_EQ(index.format, HfShardFormat::k_bin);
  EXPECT_EQ(index.shards, std::vector<std::string>{"sub/x.bin"});
}

TEST(HfIndex, RefusesWhatIsNoIndex) {
  EXPECT_EQ(parse_error("[1]"), k_name + ": an HF index is a JSON object, not a list");
  EXPECT_EQ(parse_error("{}"),
            k_name + ": no weight_map: an HF index maps each tensor to its shard file in one");
  EXPECT_EQ(parse_error(R"({"weight_map": ["a"]})"),
            k_name + ": weight_map is a list, not an object of tensor names to shard files");
  EXPECT_EQ(parse_error(R"({"weight_map": 3})"),
            k_name + ": weight_map is a number, not an object of tensor names to shard files");
  EXPECT_EQ(parse_error(R"({"weight_map": {}})"), k_name + ": weight_map lists no tensors");
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": 1}})"),
            k_name + ": weight_map: tensor 'a': its shard is a number, not a file name");
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": {"b": "c"}}})"),
            k_name + ": weight_map: tensor 'a': its shard is an object, not a file name");
  EXPECT_EQ(parse_error(R"({"metadata": [], "weight_map": {"a": "x.safetensors"}})"),
            k_name + ": metadata is a list, not an object");
  EXPECT_EQ(parse_error(R"({"weight_map": {}, "weight_map": {}})"),
            k_name + ": weight_map appears twice");
}

TEST(HfIndex, RefusesBrokenJsonAtItsByte) {
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": "x.safe)"),
            k_name + "@28: not valid JSON: syntax error while parsing value - invalid string: "
                     "missing closing quote; last read: '\"x.safe'");
  EXPECT_EQ(parse_error(""), k_name + "@0: not valid JSON: syntax error while parsing value - "
                                      "unexpected end of input; expected '[', '{', or a literal");
}

TEST(HfIndex, RefusesATensorListedTwice) {
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})"),
            k_name + ": weight_map: tensor 'a' is listed twice");
}

TEST(HfIndex, RefusesShardNamesThatLeaveTheFolder) {
  auto refused = [](const std::string& shard) {
    return parse_error(R"({"weight_map": {"w": ")" + shard + R"("}})");
  };
  std::string where = k_name + ": weight_map: tensor 'w': shard ";
  EXPECT_EQ(refused("../x.safetensors"),
            where + "'../x.safetensors' has a '..' component: it leaves the index's folder");
  EXPECT_EQ(refused("a/../../x.safetensors"),
            where + "'a/../../x.safetensors' has a '..' component: it leaves the index's folder");
  EXPECT_EQ(refused(R"(a\\..\\x.safetensors)"),
            where + R"('a\..\x.safetensors' has a '..' component: it leaves the index's folder)");
  EXPECT_EQ(refused("/etc/x.safetensors"),
            where + "'/etc/x.safetensors' is an absolute path: it leaves the index's folder");
  EXPECT_EQ(refused("C:x.safetensors"),
            where + "'C:x.safetensors' has a drive prefix: it leaves the index's folder");
  EXPECT_EQ(refused(R"(\\\\server\\share\\x.safetensors)"),
            where + R"('\\server\share\x.safetensors' has a UNC prefix: it leaves the )"
                    "index's folder");
  EXPECT_EQ(refused(""), where + "'' is empty");
  EXPECT_EQ(refused(R"(x\u0000.safetensors)"),
            where + "'x\\x00.safetensors' holds a NUL byte");
  // `..` inside a name is no component.
  EXPECT_EQ(refused("a..b.safetensors"), "no error");
}

TEST(HfIndex, RefusesAShardOfAnotherFormat) {
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": "x.safetensors", "b": "y.bin"}})"),
            k_name + ": weight_map: tensor 'b': shard 'y.bin' is a .bin file in an index of "
                     ".safetensors shards");
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": "x.safetensors"}})",
                        "pytorch_model.bin.index.json"),
            "pytorch_model.bin.index.json: weight_map: tensor 'a': shard 'x.safetensors' is a "
            ".safetensors file in an index of .bin shards");
  EXPECT_EQ(parse_error(R"({"weight_map": {"a": "x.pt"}})"),
            k_name + ": weight_map: tensor 'a': shard 'x.pt' is neither a .safetensors nor a "
                     ".bin file");
}

TEST(HfIndex, RefusesAnIndexOverTheLimit) {
  std::string huge(k_hf_index_max_bytes + 1, ' ');
  EXPECT_EQ(parse_error(huge), k_name + ": the index is 67108865 bytes, over the 64 MiB an HF "
                                        "index may have");
}

TEST(HfIndex, SniffsAJsonObjectNamingWeightMap) {
  EXPECT_TRUE(
      looks_like_hf_index(span_of(std::string(" {\n \"metadata\": {}, \"weight_map\": {}}"))));
  EXPECT_FALSE(looks_like_hf_index(span_of(std::string("{\"a\": 1}"))));
  EXPECT_FALSE(looks_like_hf_index(span_of(std::string("[\"weight_map\"]"))));
  EXPECT_FALSE(looks_like_hf_index(span_of(std::string("{}"))));
}

TEST(HfIndex, NamesTheFormatOfAnIndexByItsName) {
  EXPECT_EQ(hf_index_format_of_name("a/model.safetensors.index.json"),
            HfShardFormat::k_safetensors);
  EXPECT_EQ(hf_index_format_of_name("model.safetensors.index.fp16.json"),
            HfShardFormat::k_safetensors);
  EXPECT_EQ(hf_index_format_of_name("pytorch_model.bin.index.json"), HfShardFormat::k_bin);
  EXPECT_EQ(hf_index_format_of_name("x.index.json"), std::nullopt);
  EXPECT_EQ(hf_index_format_of_name("model.safetensors"), std::nullopt);
}

TEST(HfIndex, TellsShardLikeFileNames) {
  const std::string shard = "model-00001-of-00003.safetensors";
  EXPECT_TRUE(is_hf_shard_like("model-00004-of-00004.safetensors", shard));
  EXPECT_FALSE(is_hf_shard_like("model-00004-of-00004.bin", shard));
  EXPECT_FALSE(is_hf_shard_like("other-00004-of-00004.safetensors", shard));
  EXPECT_FALSE(is_hf_shard_like("model.safetensors", shard));
  EXPECT_FALSE(is_hf_shard_like("model-1-of-3.safetensors", "model-1-of-3.safetensors"));
}

}  // namespace
}  // namespace ckpt::test
