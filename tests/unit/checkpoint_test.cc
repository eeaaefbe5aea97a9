// Reading real checkpoints (tests/data, made by tools/make_fixtures.py with
// PyTorch) and rewriting their state dicts.
#include <gtest/gtest.h>

#include <cstring>

#include "ckpt/checkpoint.h"
#include "ckpt/error.h"
#include "ckpt/globals.h"
#include "ckpt/pickle.h"
#include "ckpt/rewrite.h"
#include "ckpt/source.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

const std::string k_data = CKPT_TEST_DATA;

std::string data(const std::string& name) { return k_data + "/" + name; }

std::string read_error(const std::string& name) {
  try {
    read_checkpoint(data(name));
  } catch (const Error& e) {
    std::string message = e.what();
    // Messages start with the path given; drop the test-data folder.
    return message.substr(k_data.size() + 1);
  }
  return "no error";
}

Node* entry(const Node* dict, const std::string& key) {
  for (const auto& [k, v] : dict->entries) {
    if (k->is_str() && k->text == key) {
      return v;
    }
  }
  return nullptr;
}

TEST(ReadCheckpoint, ReadsAZipStateDict) {
  Checkpoint ckpt = read_checkpoint(data("dp_tiny_cnn.pth"));
  EXPECT_STREQ(ckpt.format->name, "torch-zip");
  EXPECT_STREQ(format_name(ckpt), "zip");
  EXPECT_EQ(ckpt.fact("archive_name"), "dp_tiny_cnn");
  EXPECT_EQ(ckpt.fact("version"), "3");
  EXPECT_EQ(ckpt.fact("torch_hint"), "torch 1.6 or later (zip)");
  EXPECT_EQ(ckpt.tensors.size(), 9u);
  EXPECT_EQ(ckpt.graph.storages().size(), 9u);
  EXPECT_EQ(ckpt.tensors[0].storage->location->text, "cpu");
}

TEST(ReadCheckpoint, FindsStorageRecordsByNameNotOnlyByNumber) {
  // dp_tiny_cnn.pth with storages 0, 1 and 8 named 'w', '007' and '99'.
  Checkpoint named = read_checkpoint(data("named_storages.pth"));
  Checkpoint numbered = read_checkpoint(data("dp_tiny_cnn.pth"));
  ASSERT_EQ(named.tensors.size(), numbered.tensors.size());
  std::vector<std::string> keys;
  for (size_t i = 0; i < named.tensors.size(); ++i) {
    const Storage& a = *named.tensors[i].storage;
    const Storage& b = *numbered.tensors[i].storage;
    keys.push_back(a.key);
    ASSERT_EQ(a.bytes.size, b.bytes.size) << a.key;
    EXPECT_EQ(std::memcmp(a.bytes.data, b.bytes.data, a.bytes.size), 0) << a.key;
    EXPECT_EQ(a.crc32, b.crc32) << a.key;
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"w", "007", "2", "3", "4", "5", "6", "7", "99"}));
}

TEST(ReadCheckpoint, ReleasingTheNodesKeepsTheStoragesBytes) {
  Checkpoint ckpt = read_checkpoint(data("dp_tiny_cnn.pth"));
  std::vector<std::pair<const uint8_t*, uint64_t>> before;
  for (const Storage& storage : ckpt.graph.storages()) {
    before.emplace_back(storage.bytes.data, storage.bytes.size);
  }
  ASSERT_GT(ckpt.graph.node_count(), 0u);
  ckpt.graph.release_nodes();
  EXPECT_EQ(ckpt.graph.node_count(), 0u);
  EXPECT_EQ(ckpt.graph.root, nullptr);
  ASSERT_EQ(ckpt.graph.storages().size(), before.size());
  size_t i = 0;
  for (const Storage& storage : ckpt.graph.storages()) {
    EXPECT_EQ(storage.bytes.data, before[i].first);
    EXPECT_EQ(storage.bytes.size, before[i].second);
    EXPECT_EQ(storage.type, nullptr);
    EXPECT_EQ(storage.location, nullptr);
    ++i;
  }
  // The graph takes new nodes after.
  Node* node = ckpt.graph.make_int(7);
  EXPECT_EQ(node->integer, 7);
  EXPECT_EQ(ckpt.graph.node_count(), 1u);
}

TEST(ReadCheckpoint, LegacyAndZipOfOneStateDictEncodeAlike) {
  Checkpoint legacy = read_checkpoint(data("legacy_dp.pth"));
  Checkpoint zip = read_checkpoint(data("dp_tiny_cnn.pth"));
  EXPECT_STREQ(legacy.format->name, "torch-legacy");
  EXPECT_STREQ(format_name(legacy), "legacy");
  EXPECT_EQ(legacy.fact("archive_name"), "");
  EXPECT_EQ(encode_pickle(legacy.graph.root).bytes, encode_pickle(zip.graph.root).bytes);
}

TEST(ReadCheckpoint, KeepsViewsOfOneStorageShared) {
  Checkpoint ckpt = read_checkpoint(data("tied_weights.pth"));
  ASSERT_EQ(ckpt.tensors.size(), 4u);
  EXPECT_EQ(ckpt.graph.storages().size(), 3u);
}

TEST(ReadCheckpoint, RefusesBadInputNamingTheCause) {
  EXPECT_EQ(read_error("bad/empty.pth"), "bad/empty.pth: empty file");
  EXPECT_EQ(read_error("bad/text.pth"),
            "bad/text.pth: not a PyTorch checkpoint: a git-lfs pointer, not the file: run git "
            "lfs pull");
  EXPECT_EQ(read_error("bad/tar.pth"),
            "bad/tar.pth: tar-format checkpoint (torch < 0.4) is not supported: load it with an "
            "old torch and save it again with torch.save");
  EXPECT_EQ(read_error("bad/torchscript.pt"),
            "bad/torchscript.pt: TorchScript archive (torch.jit.save) is not supported: "
            "ckpt-convert reads torch.save checkpoints; save the module's state_dict() with "
            "torch.save");
  EXPECT_EQ(read_error("bad/truncated_half.pth"),
            "bad/truncated_half.pth: zip archive is truncated: no end-of-central-directory record");
  EXPECT_EQ(read_error("bad/flipped_pickle.pth"),
            "bad/flipped_pickle.pth:dp_tiny_cnn/data.pkl: CRC-32 mismatch: the record is corrupt");
  EXPECT_EQ(read_error("bad/missing_record.pth"),
            "bad/missing_record.pth:dp_tiny_cnn/data.pkl@511: storage '4' has no record "
            "'dp_tiny_cnn/data/4'");
  EXPECT_EQ(read_error("bad/short_storage.pth"),
            "bad/short_storage.pth:dp_tiny_cnn/data.pkl@205: storage record "
            "'dp_tiny_cnn/data/0' holds 432 bytes, but its 216 elements need 864");
}

TEST(SourceFormats, TriesFilesFormatsThenFolderFormatsThenHfIndex) {
  const std::vector<SourceFormat>& formats = source_formats();
  ASSERT_EQ(formats.size(), 6u);
  EXPECT_STREQ(formats[0].name, "torch-zip");
  EXPECT_STREQ(formats[1].name, "torch-legacy");
  EXPECT_STREQ(formats[2].name, "safetensors");
  EXPECT_STREQ(formats[3].name, "deepspeed");  // folder formats: sniff no file
  EXPECT_STREQ(formats[4].name, "torch-dcp");
  EXPECT_STREQ(formats[5].name, "hf-index");
  EXPECT_EQ(formats[5].described, nullptr);  // not in "not a PyTorch checkpoint (…)"
}

TEST(SourceFormats, EachClaimsOnlyItsOwnFixture) {
  MappedFile zip = MappedFile::open(data("dp_tiny_cnn.pth"));
  MappedFile legacy = MappedFile::open(data("legacy_dp.pth"));
  const std::vector<SourceFormat>& formats = source_formats();
  EXPECT_TRUE(formats[0].sniff("zip", zip.bytes()));
  EXPECT_FALSE(formats[0].sniff("legacy", legacy.bytes()));
  EXPECT_FALSE(formats[3].sniff("zip", zip.bytes()));
  EXPECT_FALSE(formats[3].sniff("legacy", legacy.bytes()));
  EXPECT_FALSE(formats[4].sniff("zip", zip.bytes()));
  EXPECT_FALSE(formats[4].sniff("legacy", legacy.bytes()));
  EXPECT_FALSE(formats[5].sniff("zip", zip.bytes()));
  EXPECT_FALSE(formats[5].sniff("legacy", legacy.bytes()));
  EXPECT_FALSE(formats[2].sniff("zip", zip.bytes()));
  EXPECT_FALSE(formats[2].sniff("legacy", legacy.bytes()));
  EXPECT_TRUE(formats[1].sniff("legacy", legacy.bytes()));
  EXPECT_FALSE(formats[1].sniff("zip", zip.bytes()));
}

TEST(ReadCheckpoint, BindsEveryStorageToTheFileItsBytesAreIn) {
  for (const char* name : {"dp_tiny_cnn.pth", "legacy_dp.pth"}) {
    Checkpoint ckpt = read_checkpoint(data(name));
    ASSERT_EQ(ckpt.files.size(), 1u) << name;
    const MappedFile* file = ckpt.mapped();
    for (const Storage& storage : ckpt.graph.storages()) {
      StorageBytes where = storage_bytes(storage);
      EXPECT_EQ(where.file, file) << name << " " << storage.key;
      EXPECT_EQ(where.bytes.data, file->bytes().data + where.file_offset) << name;
    }
  }
  MappedFile legacy = MappedFile::open(data("legacy_dp.pth"));
  Checkpoint in_memory = read_checkpoint_bytes("in-memory", legacy.bytes());
  EXPECT_EQ(in_memory.mapped(), nullptr);
  for (const Storage& storage : in_memory.graph.storages()) {
    EXPECT_EQ(storage_bytes(storage).file, nullptr) << storage.key;
  }
}

TEST(ReadCheckpointBytes, SniffsThroughTheSameTable) {
  MappedFile legacy = MappedFile::open(data("legacy_dp.pth"));
  Checkpoint ckpt = read_checkpoint_bytes("in-memory", legacy.bytes());
  EXPECT_STREQ(ckpt.format->name, "torch-legacy");
  EXPECT_EQ(ckpt.tensors.size(), 9u);
  std::string text = "not a checkpoint";
  try {
    read_checkpoint_bytes("in-memory", {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "in-memory: not a PyTorch checkpoint (none of a zip archive, a "
                           "torch.save legacy file or a safetensors file)");
  }
}

TEST(ReadCheckpointBytes, SaysAFileIsTooShortForAnyFormat) {
  std::string start("\x40\x00\x00\x00\x00", 5);  // the start of a safetensors length
  try {
    read_checkpoint_bytes("short", {reinterpret_cast<const uint8_t*>(start.data()), start.size()});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "short: not a PyTorch checkpoint (none of a zip archive, a torch.save "
                           "legacy file or a safetensors file): only 5 bytes, too few for any "
                           "of them");
  }
}

TEST(ReadCheckpoint, DecodesAMaliciousPickleWithoutRunningIt) {
  Checkpoint ckpt = read_checkpoint(data("bad/os_system.pth"));
  std::vector<GlobalUse> globals = list_globals(ckpt.graph.root);
  bool found = false;
  for (const GlobalUse& use : globals) {
    if (use.name == "os.system") {
      found = true;
      EXPECT_FALSE(use.benign);
      EXPECT_EQ(use.first_path, "[\"hook\"]");
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(format_error_of([&] { check_output_globals(ckpt.graph.root, {}); }),
            "refusing to write global 'os.system' at [\"hook\"]: loading it in Python would "
            "import and may run it; use --extract to write only the model's state dict, or "
            "--allow-global os.system if you trust it");
  EXPECT_EQ(format_error_of([&] { check_output_globals(ckpt.graph.root, {"os.system"}); }),
            "no error");
  // What convert asks before walking the output's graph again.
  EXPECT_TRUE(has_refused_global(globals, {}));
  EXPECT_FALSE(has_refused_global(globals, {"os.system"}));
  Checkpoint clean = read_checkpoint(data("dp_tiny_cnn.pth"));
  EXPECT_FALSE(has_refused_global(list_globals(clean.graph.root), {}));
}

TEST(StateDicts, FindsTheModelButNotTheOptimizerState) {
  Checkpoint ckpt = read_checkpoint(data("imagenet_checkpoint.pth"));
  std::vector<StateDictRef> dicts = find_state_dicts(ckpt.graph.root);
  ASSERT_EQ(dicts.size(), 1u);
  EXPECT_EQ(dicts[0].path, "[\"state_dict\"]");
  EXPECT_EQ(dicts[0].tensors, 9u);
  EXPECT_EQ(find_model_state_dict(ckpt.graph, std::nullopt), dicts[0].dict);
  EXPECT_EQ(format_error_of([&] { find_model_state_dict(ckpt.graph, "nope"); }),
            "no top-level key 'nope' to extract");
  EXPECT_EQ(format_error_of([&] { find_model_state_dict(ckpt.graph, "optimizer"); }),
            "'optimizer' is not a state dict (a dict of str to tensors)");
}

TEST(StateDicts, RewritesKeysAndMetadataPrefixes) {
  Checkpoint ckpt = read_checkpoint(data("dp_tiny_cnn.pth"));
  Node* dict = ckpt.graph.root;
  Node* metadata = entry(dict->state, "_metadata");
  ASSERT_NE(metadata, nullptr);
  Node* inner_root_version = entry(metadata, "module");
  std::vector<StateDictRef> dicts = find_state_dicts(dict);
  RewriteReport report = rewrite_keys(ckpt.graph, dicts, Rules::preset("unwrap"));
  EXPECT_EQ(report.mapping.size(), 9u);
  EXPECT_EQ(report.renamed, 9u);
  EXPECT_EQ(report.mapping[0].old_key, "module.conv.weight");
  EXPECT_EQ(report.mapping[0].new_key, "conv.weight");
  EXPECT_EQ(report.rule_matches, (std::vector<size_t>{9, 0}));
  // DataParallel's own '' entry gives way to the wrapped model's root.
  EXPECT_EQ(entry(metadata, ""), inner_root_version);
  EXPECT_EQ(entry(metadata, "module"), nullptr);
  EXPECT_NE(entry(metadata, "conv"), nullptr);
}

TEST(StateDicts, RefusesCollidingKeysAndChangesNothing) {
  Checkpoint ckpt = read_checkpoint(data("bad/colliding.pth"));
  std::vector<StateDictRef> dicts = find_state_dicts(ckpt.graph.root);
  std::string before = encode_pickle(ckpt.graph.root).bytes;
  EXPECT_EQ(format_error_of([&] { rewrite_keys(ckpt.graph, dicts, Rules::preset("unwrap")); }),
            "state dict (top level): keys collide: 'module.fc.weight' and 'fc.weight' both "
            "become 'fc.weight'");
  EXPECT_EQ(encode_pickle(ckpt.graph.root).bytes, before);
}

TEST(StateDicts, DropsEntriesAndCountsThem) {
  Checkpoint ckpt = read_checkpoint(data("dp_tiny_cnn.pth"));
  Rules rules = Rules::preset("unwrap");
  rules.add(make_rule(RuleKind::k_drop, {"bn\\..*"}, "--drop"));
  std::vector<StateDictRef> dicts = find_state_dicts(ckpt.graph.root);
  RewriteReport report = rewrite_keys(ckpt.graph, dicts, rules);
  EXPECT_EQ(report.dropped, 5u);
  EXPECT_EQ(report.renamed, 4u);
  EXPECT_EQ(report.rule_matches, (std::vector<size_t>{9, 0, 5}));
  ASSERT_EQ(ckpt.graph.root->entries.size(), 4u);
  EXPECT_EQ(ckpt.graph.root->entries[2].first->text, "fc.weight");
  EXPECT_EQ(report.mapping[2].old_key, "module.bn.weight");
  EXPECT_EQ(report.mapping[2].new_key, std::nullopt);
  // The storages only dropped tensors used are no longer written.
  EXPECT_EQ(encode_pickle(ckpt.graph.root).storages.size(), 4u);
}

TEST(StateDicts, ListsEveryCollision) {
  Checkpoint ckpt = read_checkpoint(data("dp_tiny_cnn.pth"));
  Rules rules = Rules::preset("none");
  rules.add(make_rule(RuleKind::k_regex, {"module\\.(conv|fc)\\..*", "\\1"}, "--regex"));
  std::vector<StateDictRef> dicts = find_state_dicts(ckpt.graph.root);
  EXPECT_EQ(format_error_of([&] { rewrite_keys(ckpt.graph, dicts, rules); }),
            "state dict (top level): keys collide: 'module.conv.weight' and 'module.conv.bias' "
            "both become 'conv'\n"
            "state dict (top level): keys collide: 'module.fc.weight' and 'module.fc.bias' both "
            "become 'fc'");
}

TEST(StateDicts, SetsEveryLocation) {
  Checkpoint ckpt = read_checkpoint(data("cuda3_tagged.pth"));
  EXPECT_EQ(ckpt.tensors[0].storage->location->text, "cuda:3");
  set_locations(ckpt.graph, "cpu");
  for (const Storage& storage : ckpt.graph.storages()) {
    EXPECT_EQ(storage.location->text, "cpu");
  }
}

}  // namespace
}  // namespace ckpt::test
