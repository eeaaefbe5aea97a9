// The pure half of HF sharded output: max_shard_size texts as huggingface_hub
// reads them (and the refusals, by exact message), the split on the reference's
// docstring example and its corner cases, the file names, the index JSON
// against text Python's json.dumps wrote, and the stale files of a folder.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ckpt/shard_plan.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* k_accepted =
    " (expected a whole number of bytes, or a number and a unit: KB, MB, GB, TB (powers of "
    "1000) or KiB, MiB, GiB, TiB (powers of 1024), such as 5GB, 1.5GB or 512MiB)";

// The message and exit status of the Error parsing `text` gives.
std::string size_error_of(const std::string& text) {
  try {
    parse_shard_size(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_usage) << text;
    return e.what();
  }
  return "no error";
}

// Items of distinct storages with these sizes, named t0, t1, ...
std::vector<ShardItem> items_of(const std::vector<uint64_t>& sizes) {
  std::vector<ShardItem> items;
  for (size_t i = 0; i < sizes.size(); ++i) {
    items.push_back({"t" + std::to_string(i), sizes[i], i});
  }
  return items;
}

using Shards = std::vector<std::vector<size_t>>;

// --- max_shard_size ---

TEST(ParseShardSize, DecimalUnitsAsHuggingfaceHub) {
  EXPECT_EQ(parse_shard_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_shard_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_shard_size("10KB"), 10'000u);
  EXPECT_EQ(parse_shard_size("2TB"), 2'000'000'000'000u);
  EXPECT_EQ(parse_shard_size("1.5GB"), 1'500'000'000u);
}

TEST(ParseShardSize, UnitIsCaseInsensitiveAndSpacesAreStripped) {
  EXPECT_EQ(parse_shard_size("5gb"), 5'000'000'000u);
  EXPECT_EQ(parse_shard_size("10kB"), 10'000u);
  EXPECT_EQ(parse_shard_size("  5 GB\n"), 5'000'000'000u);
}

TEST(ParseShardSize, FractionTruncatesAsPythonFloat) {
  // int(float("1.001") * 10**3) == 1000: the product is 1000.9999999999999.
  EXPECT_EQ(parse_shard_size("1.001KB"), 1000u);
  EXPECT_EQ(parse_shard_size("1.1MB"), 1'100'000u);
  EXPECT_EQ(parse_shard_size(".5KB"), 500u);
  EXPECT_EQ(parse_shard_size("2e3KB"), 2'000'000u);
}

TEST(ParseShardSize, BinaryUnits) {
  EXPECT_EQ(parse_shard_size("10KiB"), 10'240u);
  EXPECT_EQ(parse_shard_size("512MiB"), 536'870'912u);
  EXPECT_EQ(parse_shard_size("1.5GiB"), 1'610'612'736u);
  EXPECT_EQ(parse_shard_size("2TiB"), 2'199'023'255'552u);
  EXPECT_EQ(parse_shard_size("1gib"), 1'073'741'824u);
}

TEST(ParseShardSize, PlainIntegerIsBytes) {
  EXPECT_EQ(parse_shard_size("5000"), 5000u);
  EXPECT_EQ(parse_shard_size("9223372036854775807"), 9'223'372'036'854'775'807u);
}

TEST(ParseShardSize, EmptyRefused) {
  EXPECT_EQ(size_error_of("  "), std::string("shard size '  ': empty") + k_accepted);
}

TEST(ParseShardSize, ZeroRefused) {
  EXPECT_EQ(size_error_of("0"), std::string("shard size '0': zero bytes") + k_accepted);
  EXPECT_EQ(size_error_of("0GB"), std::string("shard size '0GB': zero bytes") + k_accepted);
  EXPECT_EQ(size_error_of("0.0001KB"),
            std::string("shard size '0.0001KB': less than one byte") + k_accepted);
}

TEST(ParseShardSize, NegativeRefused) {
  EXPECT_EQ(size_error_of("-5GB"), std::string("shard size '-5GB': negative") + k_accepted);
}

TEST(ParseShardSize, BitsRefusedWithHint) {
  EXPECT_EQ(size_error_of("5Gb"),
            std::string("shard size '5Gb': 'Gb' is gigabits; write 'GB' for bytes") + k_accepted);
  EXPECT_EQ(size_error_of("10Kb"),
            std::string("shard size '10Kb': 'Kb' is kilobits; write 'KB' for bytes") + k_accepted);
}

TEST(ParseShardSize, PrefixWithoutBytesGetsSuggestion) {
  EXPECT_EQ(size_error_of("5G"),
            std::string("shard size '5G': unknown unit 'G', did you mean '5GB'?") + k_accepted);
  EXPECT_EQ(size_error_of("1.5 m"),
            std::string("shard size '1.5 m': unknown unit 'm', did you mean '1.5MB'?") +
                k_accepted);
  EXPECT_EQ(size_error_of("2Gi"),
            std::string("shard size '2Gi': unknown unit 'Gi', did you mean '2GiB'?") + k_accepted);
}

TEST(ParseShardSize, UnknownUnitRefused) {
  EXPECT_EQ(size_error_of("5PB"), std::string("shard size '5PB': unknown unit 'PB'") + k_accepted);
  EXPECT_EQ(size_error_of("5 bytes"),
            std::string("shard size '5 bytes': unknown unit 'bytes'") + k_accepted);
}

TEST(ParseShardSize, FractionWithoutUnitRefused) {
  EXPECT_EQ(size_error_of("1.5"),
            std::string("shard size '1.5': no unit, and bytes are counted whole") + k_accepted);
}

TEST(ParseShardSize, NotANumberRefused) {
  EXPECT_EQ(size_error_of("fiveGB"),
            std::string("shard size 'fiveGB': 'five' is not a number") + k_accepted);
  EXPECT_EQ(size_error_of("1.2.3GB"),
            std::string("shard size '1.2.3GB': '1.2.3' is not a number") + k_accepted);
  EXPECT_EQ(size_error_of("GB"),
            std::string("shard size 'GB': no number before 'GB'") + k_accepted);
  EXPECT_EQ(size_error_of("5%"), std::string("shard size '5%': not a number") + k_accepted);
}

TEST(ParseShardSize, NanAndInfinityRefused) {
  EXPECT_EQ(size_error_of("nanGB"),
            std::string("shard size 'nanGB': not a finite number") + k_accepted);
  EXPECT_EQ(size_error_of("InfinityMB"),
            std::string("shard size 'InfinityMB': not a finite number") + k_accepted);
  EXPECT_EQ(size_error_of("inf"),
            std::string("shard size 'inf': not a finite number") + k_accepted);
}

TEST(ParseShardSize, OverflowPast2To63Refused) {
  EXPECT_EQ(size_error_of("9223372036854775808"),
            std::string("shard size '9223372036854775808': 2^63 bytes or more") + k_accepted);
  EXPECT_EQ(size_error_of("8388608TiB"),
            std::string("shard size '8388608TiB': 2^63 bytes or more") + k_accepted);
  EXPECT_EQ(size_error_of("1e400GB"),
            std::string("shard size '1e400GB': 2^63 bytes or more") + k_accepted);
  EXPECT_EQ(parse_shard_size("8388607TiB"), 9'223'370'937'343'148'032u);
}

TEST(ParseShardSize, TinyExponentIsLessThanOneByte) {
  EXPECT_EQ(size_error_of("1e-400GB"),
            std::string("shard size '1e-400GB': less than one byte") + k_accepted);
}

// --- The split ---

TEST(PlanShards, DocstringExample) {
  // huggingface_hub: limit 10, sizes [6, 6, 2, 6, 2, 2] give [6], [6+2], [6+2+2].
  ShardPlan plan = plan_shards(items_of({6, 6, 2, 6, 2, 2}), 10);
  EXPECT_EQ(plan.shards, (Shards{{0}, {1, 2}, {3, 4, 5}}));
  EXPECT_EQ(plan.total_size, 24u);
}

TEST(PlanShards, OversizeTensorMidStreamIsAppendedBeforeTheOpenShard) {
  ShardPlan plan = plan_shards(items_of({4, 15, 3, 5}), 10);
  EXPECT_EQ(plan.shards, (Shards{{1}, {0, 2}, {3}}));
  EXPECT_EQ(plan.total_size, 27u);
}

TEST(PlanShards, ShardExactlyAtTheLimit) {
  ShardPlan plan = plan_shards(items_of({4, 6, 1}), 10);
  EXPECT_EQ(plan.shards, (Shards{{0, 1}, {2}}));
}

TEST(PlanShards, TensorExactlyAtTheLimitIsNotOversize) {
  ShardPlan plan = plan_shards(items_of({10, 10}), 10);
  EXPECT_EQ(plan.shards, (Shards{{0}, {1}}));
}

TEST(PlanShards, SharedStorageCountedOnceInTheFirstOnesShard) {
  std::vector<ShardItem> items = {
      {"embed.weight", 6, 7}, {"a", 6, 1}, {"lm_head.weight", 6, 7}, {"b", 2, 2}};
  ShardPlan plan = plan_shards(items, 10);
  EXPECT_EQ(plan.shards, (Shards{{0, 2}, {1, 3}}));
  EXPECT_EQ(plan.total_size, 14u);
}

TEST(PlanShards, SharedStorageFollowsAnOversizeFirst) {
  std::vector<ShardItem> items = {{"a", 2, 1}, {"big", 20, 9}, {"b", 2, 2}, {"big.alias", 20, 9}};
  ShardPlan plan = plan_shards(items, 10);
  EXPECT_EQ(plan.shards, (Shards{{1, 3}, {0, 2}}));
  EXPECT_EQ(plan.total_size, 24u);
}

TEST(PlanShards, EmptyInputGivesNoShards) {
  ShardPlan plan = plan_shards({}, 10);
  EXPECT_TRUE(plan.shards.empty());
  EXPECT_EQ(plan.total_size, 0u);
}

TEST(PlanShards, EverythingFitsInOneShard) {
  ShardPlan plan = plan_shards(items_of({1, 2, 3}), 5'000'000'000);
  EXPECT_EQ(plan.shards, (Shards{{0, 1, 2}}));
  EXPECT_EQ(plan.total_size, 6u);
}

TEST(PlanShards, HugeLimitDoesNotOverflow) {
  ShardPlan plan = plan_shards(items_of({UINT64_MAX / 2, UINT64_MAX / 2}), UINT64_MAX - 1);
  EXPECT_EQ(plan.shards, (Shards{{0, 1}}));
}

TEST(PlanShards, TotalPast64BitsRefused) {
  EXPECT_EQ(format_error_of([] { plan_shards(items_of({UINT64_MAX, 1}), 10); }),
            "tensor 't1': the state dict's total size is over 2^64 - 1 bytes");
}

// --- Names ---

TEST(ShardFileName, SafetensorsShards) {
  EXPECT_EQ(shard_file_name(ShardFormat::k_safetensors, 0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(shard_file_name(ShardFormat::k_safetensors, 2, 3), "model-00003-of-00003.safetensors");
}

TEST(ShardFileName, PtShards) {
  EXPECT_EQ(shard_file_name(ShardFormat::k_pt, 0, 12), "pytorch_model-00001-of-00012.bin");
  EXPECT_EQ(shard_file_name(ShardFormat::k_pt, 99'998, 99'999),
            "pytorch_model-99999-of-99999.bin");
}

TEST(ShardFileName, OneShardIsTheSingleFileName) {
  EXPECT_EQ(shard_file_name(ShardFormat::k_safetensors, 0, 1), "model.safetensors");
  EXPECT_EQ(shard_file_name(ShardFormat::k_pt, 0, 1), "pytorch_model.bin");
}

TEST(ShardFileName, MoreThan99999ShardsRefused) {
  EXPECT_EQ(format_error_of([] { shard_file_name(ShardFormat::k_safetensors, 0, 100'000); }),
            "Error: 100000 shards: the file names number 99999 at most; "
            "choose a larger shard size");
  try {
    shard_file_name(ShardFormat::k_safetensors, 0, 100'000);
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_usage);
  }
}

TEST(ShardFileName, IndexPastCountIsALogicError) {
  EXPECT_THROW(shard_file_name(ShardFormat::k_pt, 3, 3), std::out_of_range);
  EXPECT_THROW(shard_file_name(ShardFormat::k_pt, 0, 0), std::out_of_range);
}

TEST(IndexFileName, BothFormats) {
  EXPECT_EQ(index_file_name(ShardFormat::k_safetensors), "model.safetensors.index.json");
  EXPECT_EQ(index_file_name(ShardFormat::k_pt), "pytorch_model.bin.index.json");
}

// --- The index JSON ---

TEST(HfIndexJson, ByteForByteAsPythonJsonDumps) {
  // The expected text is the output of /usr/bin/python3 -c 'import json;
  // print(json.dumps(index, indent=2, sort_keys=True))' for the same index.
  const std::string first = "model-00001-of-00002.safetensors";
  const std::string second = "model-00002-of-00002.safetensors";
  std::vector<std::pair<std::string, std::string>> weight_map = {
      {"lm_head.weight", second},
      {"caf\xc3\xa9.\xe4\xb8\xad.weight", first},
      {"emoji.\xf0\x9f\x98\x80", first},
      {"say \"hi\"", second},
      {"back\\slash/slash", first},
      {"ctl\x01\x1f\x7f\t\n\r\b\f", second},
      {"Zeta", first},
      {"~tilde", first},
      {"\xc3\xa9t\xc3\xa9", second},
      {"\xef\xbf\xa0wide", second},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"note", "caf\xc3\xa9 \xf0\x9f\x98\x80"}};
  EXPECT_EQ(hf_index_json(16384, weight_map, metadata), R"json({
  "metadata": {
    "format": "pt",
    "note": "caf\u00e9 \ud83d\ude00",
    "total_size": 16384
  },
  "weight_map": {
    "Zeta": "model-00001-of-00002.safetensors",
    "back\\slash/slash": "model-00001-of-00002.safetensors",
    "caf\u00e9.\u4e2d.weight": "model-00001-of-00002.safetensors",
    "ctl\u0001\u001f\u007f\t\n\r\b\f": "model-00002-of-00002.safetensors",
    "emoji.\ud83d\ude00": "model-00001-of-00002.safetensors",
    "lm_head.weight": "model-00002-of-00002.safetensors",
    "say \"hi\"": "model-00002-of-00002.safetensors",
    "~tilde": "model-00001-of-00002.safetensors",
    "\u00e9t\u00e9": "model-00002-of-00002.safetensors",
    "\uffe0wide": "model-00002-of-00002.safetensors"
  }
}
)json");
}

TEST(HfIndexJson, EmptyWeightMapIsBareBraces) {
  EXPECT_EQ(hf_index_json(0, {}, {}), R"json({
  "metadata": {
    "total_size": 0
  },
  "weight_map": {}
}
)json");
}

TEST(HfIndexJson, NameTwiceRefused) {
  EXPECT_EQ(format_error_of([] { hf_index_json(8, {{"a", "x"}, {"a", "y"}}, {}); }),
            "weight map: tensor 'a' appears twice");
}

TEST(HfIndexJson, TotalSizeInExtraMetadataRefused) {
  EXPECT_EQ(format_error_of([] { hf_index_json(8, {}, {{"total_size", "9"}}); }),
            "index metadata: 'total_size' is the index's own key");
}

TEST(HfIndexJson, InvalidUtf8Refused) {
  EXPECT_EQ(format_error_of([] { hf_index_json(8, {{"a\xff", "x"}}, {}); }),
            "weight map key 'a\xff': not UTF-8 (byte 1)");
  EXPECT_EQ(format_error_of([] { hf_index_json(8, {{"a", "\xed\xa0\x80"}}, {}); }),
            "weight map: tensor 'a': not UTF-8 (byte 0)");
  EXPECT_EQ(format_error_of([] { hf_index_json(8, {{"a", "\xc0\xaf"}}, {}); }),
            "weight map: tensor 'a': not UTF-8 (byte 0)");
}

// --- Stale files ---

class StaleShardFiles : public ::testing::Test {
protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "shard_plan_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    m_folder = pattern;
  }
  void TearDown() override { fs::remove_all(m_folder); }
  void touch(const std::string& name) { std::ofstream(m_folder + "/" + name) << "x"; }

  std::string m_folder;
};

TEST_F(StaleShardFiles, SafetensorsShardsSingleAndIndex) {
  for (const char* name :
       {"model-00002-of-00003.safetensors", "model-00001-of-00003.safetensors",
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
        "pytorch_model-00001-of-00002.bin", "model-0001-of-00003.safetensors",
        "model-00001-of-00003.safetensors.tmp", "model-0000a-of-00003.safetensors",
        "xmodel-00001-of-00003.safetensors", "model-00001_of-00003.safetensors",
        "config.json"}) {
    touch(name);
  }
  fs::create_directory(m_folder + "/model-00003-of-00003.safetensors");
  EXPECT_EQ(stale_shard_files(m_folder, ShardFormat::k_safetensors),
            (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                      "model-00002-of-00003.safetensors", "model.safetensors",
                                      "model.safetensors.index.json"}));
}

TEST_F(StaleShardFiles, PtShardsSingleAndIndex) {
  for (const char* name : {"pytorch_model-00001-of-00002.bin", "pytorch_model.bin",
                           "pytorch_model.bin.index.json", "model.safetensors",
                           "pytorch_model-00001-of-00002.safetensors"}) {
    touch(name);
  }
  EXPECT_EQ(stale_shard_files(m_folder, ShardFormat::k_pt),
            (std::vector<std::string>{"pytorch_model-00001-of-00002.bin", "pytorch_model.bin",
                                      "pytorch_model.bin.index.json"}));
}

TEST_F(StaleShardFiles, MissingFolderHasNone) {
  EXPECT_TRUE(stale_shard_files(m_folder + "/absent", ShardFormat::k_safetensors).empty());
}

TEST_F(StaleShardFiles, FileInPlaceOfFolderRefused) {
  touch("plain");
  std::string folder = m_folder + "/plain";
  EXPECT_EQ(format_error_of([&] { stale_shard_files(folder, ShardFormat::k_safetensors); }),
            "Error: " + folder + ": cannot list the folder: Not a directory");
}

}  // namespace
}  // namespace ckpt::test
