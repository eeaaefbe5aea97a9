// `batch`: shards, sizes, the input list and its mapping under OUTDIR, the
// memory-bounded queue, and whole runs over copies of tests/data (resume,
// change detection, failures, determinism across job counts).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "ckpt/batch.h"
#include "ckpt/error.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

namespace fs = std::filesystem;
const std::string k_data = CKPT_TEST_DATA;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return std::to_string(static_cast<int>(e.status())) + ": " + e.what();
  }
  return "no error";
}

void copy(const std::string& fixture, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy_file(k_data + "/" + fixture, to, fs::copy_options::overwrite_existing);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> relatives(const std::vector<BatchInput>& inputs) {
  std::vector<std::string> out;
  for (const BatchInput& input : inputs) {
    out.push_back(input.relative + (input.error.empty() ? "" : " (error)"));
  }
  return out;
}

TEST(Shard, ParsesIOfN) {
  Shard shard = parse_shard("2/5");
  EXPECT_EQ(shard.index, 2u);
  EXPECT_EQ(shard.count, 5u);
  EXPECT_EQ(error_of([] { parse_shard("5/5"); }),
            "2: --shard '5/5': I must be 0 to 4 (shards count from 0, as SLURM_ARRAY_TASK_ID and "
            "JOB_COMPLETION_INDEX do)");
  EXPECT_EQ(error_of([] { parse_shard("1/0"); }), "2: --shard '1/0': N must be at least 1");
  EXPECT_EQ(error_of([] { parse_shard("one/4"); }),
            "2: --shard 'one/4': expected I/N, two numbers such as 0/4");
  EXPECT_EQ(error_of([] { parse_shard("3"); }),
            "2: --shard '3': expected I/N, two numbers such as 0/4");
}

TEST(Shard, EveryPathInExactlyOneShardAndStable) {
  for (uint32_t count : {1u, 2u, 3u, 7u}) {
    std::vector<size_t> per_shard(count, 0);
    for (int i = 0; i < 300; ++i) {
      std::string path = "zoo/m" + std::to_string(i) + ".pth";
      int owners = 0;
      for (uint32_t index = 0; index < count; ++index) {
        if (in_shard(path, Shard{index, count})) {
          ++owners;
          ++per_shard[index];
        }
      }
      ASSERT_EQ(owners, 1) << path << " in " << count << " shards";
    }
    for (size_t n : per_shard) {
      EXPECT_GT(n, 300 / count / 2) << "shards of " << count << " are badly unbalanced";
    }
  }
  // The hash is part of the contract: machines and versions must agree.
  EXPECT_TRUE(in_shard("resnet/resnet50.pth", Shard{0, 4}));
  EXPECT_TRUE(in_shard("vit/vit_b_16.pth", Shard{2, 4}));
}

TEST(ByteSize, SuffixesAndErrors) {
  EXPECT_EQ(parse_byte_size("--max-memory", "100000"), 100000u);
  EXPECT_EQ(parse_byte_size("--max-memory", "512M"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("--max-memory", "1.5G"), 3ull << 29);
  EXPECT_EQ(parse_byte_size("--max-memory", "2GiB"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("--max-memory", "1g"), 1ull << 30);
  EXPECT_EQ(parse_byte_size("--max-memory", "1GiB"), 1ull << 30);
  EXPECT_EQ(parse_byte_size("--max-memory", "64KiB"), 64ull << 10);
  EXPECT_EQ(parse_byte_size("--max-memory", "64KB"), 64000u);  // decimal, as huggingface_hub
  EXPECT_EQ(parse_byte_size("--max-memory", "5GB"), 5000000000u);
  EXPECT_EQ(parse_byte_size("--max-memory", "1.5gb"), 1500000000u);
  EXPECT_EQ(error_of([] { parse_byte_size("--max-memory", "lots"); }),
            "2: --max-memory 'lots': expected a size such as 512M, 8G, 1.5GiB (powers of 1024) "
            "or 5GB (powers of 1000)");
  EXPECT_EQ(error_of([] { parse_byte_size("--max-memory", "8Q"); }),
            "2: --max-memory '8Q': expected a size such as 512M, 8G, 1.5GiB (powers of 1024) "
            "or 5GB (powers of 1000)");
  EXPECT_EQ(error_of([] { parse_byte_size("--max-memory", "0"); }),
            "2: --max-memory '0': expected a size such as 512M, 8G, 1.5GiB (powers of 1024) "
            "or 5GB (powers of 1000)");
}

TEST(Queue, LargestThatFitsElseAloneElseWait) {
  std::vector<uint64_t> pending = {900, 500, 300, 100};
  EXPECT_EQ(pick_next_input(pending, 0, 0, 1000), 0u);
  EXPECT_EQ(pick_next_input(pending, 400, 1, 1000), 1u);   // 900 does not fit beside 400
  EXPECT_EQ(pick_next_input(pending, 850, 2, 1000), 3u);
  EXPECT_EQ(pick_next_input(pending, 950, 2, 1000), std::nullopt);
  EXPECT_EQ(pick_next_input({5000}, 0, 0, 1000), 0u);      // larger than the budget: alone
  EXPECT_EQ(pick_next_input({5000}, 10, 1, 1000), std::nullopt);
  EXPECT_EQ(pick_next_input({}, 0, 0, 1000), std::nullopt);
}

TEST(Inputs, FoldersFilesAndManifestsMapUnderOutdir) {
  Scratch s;
  put(s / "zoo/a/one.pth", "x");
  put(s / "zoo/a/b/two.pt", "x");
  put(s / "zoo/three.ckpt", "x");
  put(s / "zoo/weights.bin", "x");
  put(s / "zoo/notes.txt", "x");
  put(s / "zoo/one.pth.bak", "x");
  put(s / "zoo/out/old.pth", "x");  // OUTDIR inside the source: never entered
  put(s / "extra/direct.tar", "x");
  put(s / "lists/sub/m.pth", "x");
  put(s / "lists/dir/n.pth", "x");
  put(s / "lists/manifest.txt",
      "# comment\n\nsub/m.pth\n  dir/  \n../extra/direct.tar\n" + s.path() +
          "/zoo/a/one.pth\nmissing.pth\n");
  std::vector<BatchInput> inputs = collect_batch_inputs(
      {s / "zoo", s / "extra/direct.tar", "@" + (s / "lists/manifest.txt")},
      default_batch_globs(), s / "zoo/out");
  EXPECT_EQ(relatives(inputs),
            (std::vector<std::string>{"a/b/two.pt", "a/one.pth", "dir/n.pth", "direct.tar",
                                      "missing.pth (error)", "one.pth", "sub/m.pth", "three.ckpt",
                                      "weights.bin"}));
  EXPECT_EQ(inputs[1].input, s / "zoo/a/one.pth");
  EXPECT_EQ(inputs[1].size, 1u);
  EXPECT_EQ(inputs[4].error, s / "lists/missing.pth" + ": cannot read: No such file or directory");
}

TEST(Inputs, GlobsReplaceTheDefaults) {
  Scratch s;
  put(s / "zoo/a/x.pth.tar", "x");
  put(s / "zoo/a/y.pth", "x");
  put(s / "zoo/b/x.pth.tar", "x");
  EXPECT_EQ(relatives(collect_batch_inputs({s / "zoo"}, {"*.pth.tar"}, "")),
            (std::vector<std::string>{"a/x.pth.tar", "b/x.pth.tar"}));
  EXPECT_EQ(relatives(collect_batch_inputs({s / "zoo"}, {"b/*"}, "")),
            (std::vector<std::string>{"b/x.pth.tar"}));
}

TEST(Inputs, DefaultsTakePthTarAndEveryPassedOverEntryIsTold) {
  Scratch s;
  put(s / "zoo/runs/checkpoint.pth.tar", "x");
  put(s / "zoo/runs/model_best.pth.tar", "x");
  put(s / "zoo/runs/archive.tar", "x");
  put(s / "zoo/runs/old.pth.tar.bak", "x");
  put(s / "zoo/out/a.pth", "x");                  // OUTDIR
  put(s / "zoo/other/.ckpt-convert/b.pth", "x");  // sidecars of another output tree
  put(s / "zoo/other/b.pth", "x");
  fs::create_directory_symlink(s / "zoo/runs", s / "zoo/latest");
  fs::create_symlink(s / "zoo/nowhere.pth", s / "zoo/dangling.pth");
  ASSERT_EQ(::mkfifo((s / "zoo/pipe.pth").c_str(), 0600), 0);
  std::map<std::string, std::string> skipped;
  std::vector<BatchInput> inputs = collect_batch_inputs(
      {s / "zoo", s / "zoo/other/b.pth"}, default_batch_globs(), s / "zoo/out",
      [&](const std::string& path, const std::string& reason) {
        EXPECT_TRUE(skipped.emplace(path.substr(s.path().size() + 1), reason).second) << path;
      });
  EXPECT_EQ(relatives(inputs), (std::vector<std::string>{"b.pth", "other/b.pth",
                                                         "runs/checkpoint.pth.tar",
                                                         "runs/model_best.pth.tar"}));
  const std::string none = "matches none of *.pth *.pth.tar *.pt *.bin *.ckpt *.safetensors";
  EXPECT_EQ(skipped, (std::map<std::string, std::string>{
                         {"zoo/runs/archive.tar", none},
                         {"zoo/runs/old.pth.tar.bak", none},
                         {"zoo/out", "the output folder"},
                         {"zoo/other/.ckpt-convert", "the sidecars of an output folder"},
                         {"zoo/latest", "a symlink to a folder (not followed)"},
                         {"zoo/dangling.pth", "a dangling symlink"},
                         {"zoo/pipe.pth", "not a regular file"},
                     }));
}

TEST(Inputs, CollisionsAndBadSourcesStopTheBatch) {
  Scratch s;
  put(s / "a/m.pth", "x");
  put(s / "b/m.pth", "y");
  EXPECT_EQ(error_of([&] { collect_batch_inputs({s / "a", s / "b"}, default_batch_globs(), ""); }),
            "2: " + (s / "a/m.pth") + " and " + (s / "b/m.pth") + " would both be written to m.pth");
  EXPECT_EQ(error_of([&] { collect_batch_inputs({s / "nope"}, default_batch_globs(), ""); }),
            "1: " + (s / "nope") + ": cannot read: No such file or directory");
  EXPECT_EQ(error_of([&] { collect_batch_inputs({s / "a"}, default_batch_globs(), s / "a"); }),
            "2: " + (s / "a") + ": is the output folder too: the outputs would replace the inputs");
  // the same file twice for the same place is one input
  EXPECT_EQ(relatives(collect_batch_inputs({s / "a", s / "a/m.pth"}, default_batch_globs(), "")),
            (std::vector<std::string>{"m.pth"}));
}

TEST(Inputs, OutputNamesFollowTheFormat) {
  BatchNaming pt;
  BatchNaming st{"safetensors", false};
  BatchNaming sharded{"safetensors-shards", true};
  EXPECT_EQ(batch_output_name("a/b.pth", false, pt), "a/b.pth");
  EXPECT_EQ(batch_output_name("runs/c.pth.tar", false, pt), "runs/c.pth.tar");
  EXPECT_EQ(batch_output_name("w.bin", false, pt), "w.bin");
  EXPECT_EQ(batch_output_name("x/m.safetensors", false, pt), "x/m.pth");
  EXPECT_EQ(batch_output_name("hf/llama-3.1", true, pt), "hf/llama-3.1.pth");
  EXPECT_EQ(batch_output_name("a/b.pth", false, st), "a/b.safetensors");
  EXPECT_EQ(batch_output_name("runs/c.pth.tar", false, st), "runs/c.safetensors");
  EXPECT_EQ(batch_output_name("x/m.safetensors", false, st), "x/m.safetensors");
  EXPECT_EQ(batch_output_name("direct.tar", false, st), "direct.safetensors");
  EXPECT_EQ(batch_output_name("noext", false, st), "noext.safetensors");
  EXPECT_EQ(batch_output_name("hf/llama-3.1", true, st), "hf/llama-3.1.safetensors");
  EXPECT_EQ(batch_output_name("a/b.pth", false, sharded), "a/b");
  EXPECT_EQ(batch_output_name("a/.pth", false, sharded), "a/.pth");
  EXPECT_EQ(batch_output_name("hf/llama-3.1", true, sharded), "hf/llama-3.1");
}

TEST(Inputs, AShardFolderIsOneInputAndItsShardsAreNotTaken) {
  Scratch s;
  // Only names make a shard folder: the files need not read.
  for (const char* file : {"zoo/a.pth", "zoo/b.safetensors", "zoo/hf/bin/nested/c.pth",
                           "zoo/hf/st/model.safetensors.index.json",
                           "zoo/hf/st/model-00001-of-00001.safetensors",
                           "direct/model.safetensors.index.fp16.json"}) {
    put(s / file, "x");
  }
  put(s / "zoo/hf/bin/pytorch_model.bin.index.json", "{}");
  put(s / "zoo/hf/bin/pytorch_model-00001-of-00002.bin", "xyz");
  put(s / "zoo/hf/bin/pytorch_model-00002-of-00002.bin", "xyz");
  std::map<std::string, std::string> skipped;
  auto tell = [&](const std::string& path, const std::string& reason) {
    skipped.emplace(path.substr(s.path().size() + 1), reason);
  };
  std::vector<BatchInput> inputs =
      collect_batch_inputs({s / "zoo", s / "direct/"}, default_batch_globs(), "", tell);
  EXPECT_EQ(relatives(inputs), (std::vector<std::string>{"a.pth", "b.pth", "direct.pth",
                                                         "hf/bin.pth", "hf/st.pth"}));
  EXPECT_TRUE(inputs[3].folder);
  EXPECT_EQ(inputs[3].input, s / "zoo/hf/bin");
  EXPECT_EQ(inputs[3].size, 8u);  // the files in it: index and shards
  EXPECT_FALSE(inputs[1].folder);
  auto in = [&](const std::string& folder) {
    return "in the HF shard folder " + (s / folder) + " (converted as one input)";
  };
  const std::string in_bin = in("zoo/hf/bin");
  EXPECT_EQ(skipped, (std::map<std::string, std::string>{
                         {"zoo/hf/bin/pytorch_model-00001-of-00002.bin", in_bin},
                         {"zoo/hf/bin/pytorch_model-00002-of-00002.bin", in_bin},
                         {"zoo/hf/bin/nested",
                          "a folder in the HF shard folder " + (s / "zoo/hf/bin") + " (not walked)"},
                         {"zoo/hf/st/model-00001-of-00001.safetensors", in("zoo/hf/st")},
                     }));
  BatchNaming sharded{"safetensors-shards", true};
  EXPECT_EQ(relatives(collect_batch_inputs({s / "zoo"}, default_batch_globs(), "", {}, sharded)),
            (std::vector<std::string>{"a", "b", "hf/bin", "hf/st"}));
  // --glob: a shard folder is taken when they match one of its files; named directly, always
  skipped.clear();
  EXPECT_EQ(relatives(collect_batch_inputs({s / "zoo", s / "direct"}, {"*.bin"}, "", tell)),
            (std::vector<std::string>{"direct.pth", "hf/bin.pth"}));
  EXPECT_EQ(skipped["zoo/hf/st"], "an HF shard folder whose files match none of *.bin");
}

TEST(Inputs, APthAndASafetensorsOfOneNameCollide) {
  Scratch s;
  put(s / "zoo/m.pth", "x");
  put(s / "zoo/m.safetensors", "y");
  EXPECT_EQ(error_of([&] { collect_batch_inputs({s / "zoo"}, default_batch_globs(), ""); }),
            "2: " + (s / "zoo/m.pth") + " and " + (s / "zoo/m.safetensors") +
                " would both be written to m.pth");
}

// A small zoo of real checkpoints, and one that is broken.
void make_zoo(const Scratch& s) {
  copy("dp_tiny_cnn.pth", s / "zoo/cnn/dp.pth");
  copy("legacy_dp.pth", s / "zoo/cnn/legacy.pt");
  copy("tied_weights.pth", s / "zoo/lm/tied.bin");
  copy("views.pth", s / "zoo/lm/deep/views.ckpt");
  copy("fsdp_style.pth", s / "zoo/fsdp.pth");
}

std::map<std::string, std::string> statuses(const std::string& report) {
  std::map<std::string, std::string> out;
  std::stringstream lines(slurp(report));
  std::string line;
  while (std::getline(lines, line)) {
    auto field = [&](const std::string& name) {
      size_t at = line.find("\"" + name + "\":\"");
      return line.substr(at + name.size() + 4, line.find('"', at + name.size() + 4) - at - name.size() - 4);
    };
    out[field("path")] = field("status") + " " + field("reason");
  }
  return out;
}

BatchOptions options_for(const Scratch& s, unsigned jobs = 2) {
  BatchOptions options;
  options.sources = {s / "zoo"};
  options.output_dir = s / "out";
  options.jobs = jobs;
  options.tool_version = "test";
  return options;
}

TEST(RunBatch, ConvertsThenSkipsThenNoticesChanges) {
  Scratch s;
  make_zoo(s);
  BatchSummary first = run_batch(options_for(s));
  EXPECT_EQ(first.converted.inputs, 5u);
  EXPECT_EQ(batch_exit_code(first), 0);
  EXPECT_EQ(first.report_path, s / "out/ckpt-convert-batch.jsonl");
  EXPECT_TRUE(fs::exists(s / "out/lm/deep/views.ckpt"));
  EXPECT_EQ(sidecar_path(s / "out", "lm/deep/views.ckpt"),
            s / "out/.ckpt-convert/lm/deep/views.ckpt.json");
  EXPECT_TRUE(fs::exists(s / "out/.ckpt-convert/lm/deep/views.ckpt.json"));
  EXPECT_FALSE(fs::exists(s / "out/lm/deep/views.ckpt.ckpt-convert.json"));
  std::string dp = slurp(s / "out/cnn/dp.pth");

  BatchSummary second = run_batch(options_for(s));
  EXPECT_EQ(second.skipped.inputs, 5u);
  EXPECT_EQ(statuses(second.report_path)["cnn/dp.pth"], "skipped up to date");

  // touched, same bytes: still up to date; other bytes: converted again
  struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (s / "zoo/cnn/dp.pth").c_str(), times, 0), 0);
  copy("orig_mod_module.pth", s / "zoo/fsdp.pth");
  fs::remove(s / "out/lm/tied.bin");
  BatchSummary third = run_batch(options_for(s));
  std::map<std::string, std::string> got = statuses(third.report_path);
  EXPECT_EQ(got["cnn/dp.pth"], "skipped up to date");
  EXPECT_EQ(got["fsdp.pth"], "converted input changed");
  EXPECT_EQ(got["lm/tied.bin"], "converted new");
  EXPECT_EQ(slurp(s / "out/cnn/dp.pth"), dp);

  BatchOptions other = options_for(s);
  other.convert.location = "keep";
  EXPECT_EQ(statuses(run_batch(other).report_path)["cnn/legacy.pt"], "converted options changed");
  BatchOptions forced = options_for(s);
  forced.convert.force = true;
  EXPECT_EQ(run_batch(forced).converted.inputs, 5u);
}

// A shard folder: one torch.save shard (`fixture`) and the index that names
// one of its tensors (the others are left out, with a warning).
void make_shard_folder(const std::string& folder, const std::string& fixture) {
  copy(fixture, folder + "/pytorch_model-00001-of-00001.bin");
  put(folder + "/pytorch_model.bin.index.json",
      R"({"weight_map": {"module.conv.weight": "pytorch_model-00001-of-00001.bin"}})");
}

TEST(RunBatch, AShardFolderIsOneOutputResumedByEachOfItsFiles) {
  Scratch s;
  make_shard_folder(s / "zoo/hf", "dp_tiny_cnn.pth");
  copy("clean_cpu.pth", s / "zoo/a.pth");
  EXPECT_EQ(run_batch(options_for(s)).converted.inputs, 2u);
  EXPECT_TRUE(fs::is_regular_file(s / "out/hf.pth"));
  EXPECT_FALSE(fs::exists(s / "out/hf"));
  EXPECT_EQ(run_batch(options_for(s)).skipped.inputs, 2u);

  // a shard touched, same bytes: up to date; other bytes: that folder converted again
  std::string shard = s / "zoo/hf/pytorch_model-00001-of-00001.bin";
  struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, shard.c_str(), times, 0), 0);
  EXPECT_EQ(run_batch(options_for(s)).skipped.inputs, 2u);
  copy("legacy_dp.pth", shard);
  std::map<std::string, std::string> got = statuses(run_batch(options_for(s)).report_path);
  EXPECT_EQ(got["hf.pth"], "converted input changed");
  EXPECT_EQ(got["a.pth"], "skipped up to date");
}

TEST(RunBatch, AFolderOutputIsCheckedFileByFile) {
  Scratch s;
  make_shard_folder(s / "zoo/hf", "dp_tiny_cnn.pth");
  copy("clean_cpu.pth", s / "zoo/a.pth");
  BatchOptions sharded = options_for(s);
  sharded.convert.sink.max_shard_size = 1000;
  EXPECT_EQ(run_batch(sharded).converted.inputs, 2u);
  EXPECT_TRUE(fs::is_directory(s / "out/hf"));
  EXPECT_TRUE(fs::is_directory(s / "out/a"));
  EXPECT_EQ(run_batch(sharded).skipped.inputs, 2u);
  for (const fs::directory_entry& entry : fs::directory_iterator(s / "out/a")) {
    if (entry.path().filename() != "model.safetensors.index.json") {
      fs::remove(entry.path());  // one shard lost
      break;
    }
  }
  std::map<std::string, std::string> got = statuses(run_batch(sharded).report_path);
  EXPECT_EQ(got["a"], "converted output changed");
  EXPECT_EQ(got["hf"], "skipped up to date");
  // the same zoo written as single files is another set of options and outputs
  EXPECT_EQ(statuses(run_batch(options_for(s)).report_path)["a.pth"], "converted new");
}

TEST(RunBatch, AFailureIsRecordedAndTheOthersAreDone) {
  Scratch s;
  make_zoo(s);
  copy("bad/truncated_half.pth", s / "zoo/cnn/broken.pth");
  BatchSummary summary = run_batch(options_for(s));
  EXPECT_EQ(summary.converted.inputs, 5u);
  ASSERT_EQ(summary.failed.inputs, 1u);
  EXPECT_EQ(batch_exit_code(summary), 5);
  EXPECT_EQ(summary.failures[0].relative, "cnn/broken.pth");
  EXPECT_EQ(summary.failures[0].exit_code, 1);
  EXPECT_EQ(summary.failures[0].error.rfind(s / "zoo/cnn/broken.pth: ", 0), 0u);
  EXPECT_FALSE(fs::exists(s / "out/cnn/broken.pth"));
  EXPECT_EQ(statuses(summary.report_path).size(), 6u);
}

TEST(RunBatch, AFailedRerunLeavesNoOutputOfTheEarlierOptions) {
  Scratch s;
  copy("imagenet_checkpoint.pth", s / "zoo/train.pth");
  copy("dp_tiny_cnn.pth", s / "zoo/bare.pth");
  ASSERT_EQ(run_batch(options_for(s)).converted.inputs, 2u);
  ASSERT_TRUE(fs::exists(s / "out/bare.pth"));
  BatchOptions extract = options_for(s);
  extract.convert.extract = true;
  extract.convert.extract_key = "state_dict";  // bare.pth has no such key: it fails now

  BatchOptions dry = extract;
  dry.convert.dry_run = true;
  BatchSummary looked = run_batch(dry);
  ASSERT_EQ(looked.failures.size(), 1u);
  EXPECT_EQ(looked.failures[0].stale_output, "would be removed");
  EXPECT_TRUE(fs::exists(s / "out/bare.pth"));  // a dry run removes nothing
  EXPECT_TRUE(fs::exists(sidecar_path(s / "out", "bare.pth")));

  BatchSummary rerun = run_batch(extract);
  EXPECT_EQ(rerun.converted.inputs, 1u);
  ASSERT_EQ(rerun.failures.size(), 1u);
  EXPECT_EQ(rerun.failures[0].relative, "bare.pth");
  EXPECT_EQ(rerun.failures[0].stale_output, "removed");
  EXPECT_FALSE(fs::exists(s / "out/bare.pth"));
  EXPECT_FALSE(fs::exists(sidecar_path(s / "out", "bare.pth")));
  EXPECT_TRUE(fs::exists(s / "zoo/bare.pth"));
  EXPECT_EQ(statuses(rerun.report_path)["train.pth"], "converted options changed");
}

TEST(RunBatch, SidecarsBesideOutputsAreMovedAndStillCount) {
  Scratch s;
  make_zoo(s);
  ASSERT_EQ(run_batch(options_for(s)).converted.inputs, 5u);
  // The tree an earlier version left: each sidecar beside its output.
  std::vector<std::string> outputs = {"cnn/dp.pth", "cnn/legacy.pt", "lm/tied.bin",
                                      "lm/deep/views.ckpt", "fsdp.pth"};
  for (const std::string& output : outputs) {
    fs::rename(sidecar_path(s / "out", output), s / "out/" + output + ".ckpt-convert.json");
  }
  fs::remove_all(s / "out/.ckpt-convert");
  std::string dp_sidecar = slurp(s / "out/cnn/dp.pth.ckpt-convert.json");

  BatchOptions dry = options_for(s);
  dry.convert.dry_run = true;
  EXPECT_EQ(run_batch(dry).skipped.inputs, 5u);
  EXPECT_FALSE(fs::exists(s / "out/.ckpt-convert"));  // a dry run moves nothing

  BatchSummary rerun = run_batch(options_for(s));
  EXPECT_EQ(rerun.skipped.inputs, 5u);
  for (const std::string& output : outputs) {
    EXPECT_TRUE(fs::exists(sidecar_path(s / "out", output))) << output;
    EXPECT_FALSE(fs::exists(s / "out/" + output + ".ckpt-convert.json")) << output;
  }
  EXPECT_EQ(slurp(sidecar_path(s / "out", "cnn/dp.pth")), dp_sidecar);
  EXPECT_EQ(run_batch(options_for(s)).skipped.inputs, 5u);
}

TEST(RunBatch, AnOutputAmongTheSidecarsIsRefused) {
  Scratch s;
  copy("dp_tiny_cnn.pth", s / "lists/.ckpt-convert/m.pth");
  put(s / "lists/manifest.txt", ".ckpt-convert/m.pth\n");
  BatchOptions options = options_for(s);
  options.sources = {"@" + (s / "lists/manifest.txt")};
  BatchSummary summary = run_batch(options);
  ASSERT_EQ(summary.failures.size(), 1u);
  EXPECT_EQ(summary.failures[0].error,
            s / "lists/.ckpt-convert/m.pth" + ": its output " + (s / "out/.ckpt-convert/m.pth") +
                " would be among the sidecars (.ckpt-convert/); list it under another path");
  EXPECT_FALSE(fs::exists(s / "out/.ckpt-convert/m.pth"));
}

TEST(RunBatch, AFailureNeverRemovesItsInput) {
  // A file named directly into the folder it came from: its output is the
  // input itself; the conversion fails, and the file stays.
  Scratch s;
  copy("bad/truncated_half.pth", s / "zoo/broken.pth");
  BatchOptions options = options_for(s);
  options.sources = {s / "zoo/broken.pth"};
  options.output_dir = s / "zoo";
  BatchSummary summary = run_batch(options);
  ASSERT_EQ(summary.failures.size(), 1u);
  EXPECT_EQ(summary.failures[0].stale_output, "");
  EXPECT_EQ(slurp(s / "zoo/broken.pth"), slurp(k_data + "/bad/truncated_half.pth"));
}

TEST(RunBatch, SameBytesWhateverTheJobCount) {
  Scratch s;
  make_zoo(s);
  BatchOptions one = options_for(s, 1);
  BatchOptions four = options_for(s, 4);
  four.output_dir = s / "out4";
  four.max_memory = 1;  // smaller than any input: one at a time, still all done
  EXPECT_EQ(run_batch(one).converted.inputs, 5u);
  EXPECT_EQ(run_batch(four).converted.inputs, 5u);
  for (const char* name : {"cnn/dp.pth", "cnn/legacy.pt", "lm/tied.bin", "lm/deep/views.ckpt",
                           "fsdp.pth"}) {
    EXPECT_EQ(slurp(s / "out/" + name), slurp(s / "out4/" + name)) << name;
  }
}

TEST(RunBatch, ShardsSplitTheListAndNameTheirReports) {
  Scratch s;
  make_zoo(s);
  std::map<std::string, int> seen;
  size_t total = 0;
  for (uint32_t index = 0; index < 3; ++index) {
    BatchOptions options = options_for(s);
    options.shard = Shard{index, 3};
    BatchSummary summary = run_batch(options);
    EXPECT_EQ(summary.listed, 5u);
    EXPECT_EQ(summary.report_path, s / "out/ckpt-convert-batch.shard-" + std::to_string(index) +
                                         "-of-3.jsonl");
    for (const auto& [path, status] : statuses(summary.report_path)) {
      ++seen[path];
    }
    total += summary.inputs;
  }
  EXPECT_EQ(total, 5u);
  EXPECT_EQ(seen.size(), 5u);
}

TEST(BatchReport, RecordAndSummaryText) {
  BatchRecord record;
  record.input = "zoo/a.pth";
  record.relative = "a.pth";
  record.output = "out/a.pth";
  record.status = BatchStatus::k_converted;
  record.reason = "new";
  record.input_bytes = 2000000;
  record.output_bytes = 1900000;
  record.output_format = "pt";
  record.tensors = 3;
  record.storages = 2;
  record.storage_bytes = 1800000;
  record.renamed = 3;
  record.rules = {{"strip module.", "--strip", 3}};
  record.verified_on = "cpu";
  record.seconds = 0.5;
  EXPECT_EQ(format_batch_record(record),
            R"({"schema":"ckpt-convert.batch/2","input":"zoo/a.pth","path":"a.pth",)"
            R"("output":"out/a.pth","status":"converted","reason":"new","exit_code":0,"error":null,)"
            R"("stale_output":null,"input_bytes":2000000,"output_bytes":1900000,)"
            R"("output_format":"pt",)"
            R"("dtype":null,"shards":[],"tensors":3,"storages":2,)"
            R"("storage_bytes":1800000,"renamed":3,"dropped":0,)"
            R"("rules":[{"rule":"strip module.","origin":"--strip","matches":3}],"warnings":[],)"
            R"("verified_on":"cpu","seconds":0.5})");
  BatchSummary summary;
  summary.listed = 10;
  summary.inputs = 4;
  summary.jobs = 2;
  summary.seconds = 1.25;
  summary.converted = {2, 4000000, 3800000};
  summary.skipped = {1, 1000000, 900000};
  summary.failed = {1, 500000, 0};
  BatchRecord failure;
  failure.input = "zoo/b.pth";
  failure.exit_code = 1;
  failure.error = "zoo/b.pth: zip archive is truncated\nsecond line";
  summary.failures = {failure};
  summary.report_path = "out/r.jsonl";
  EXPECT_EQ(format_batch_summary(summary),
            "batch: 4 inputs in this shard, of 10 listed, 2 jobs, 1.2 s\n"
            "  status       inputs    input MB   output MB\n"
            "  converted         2         4.0         3.8\n"
            "  skipped           1         1.0         0.9\n"
            "  failed            1         0.5         0.0\n"
            "  failed (exit 1): zoo/b.pth: zip archive is truncated\n"
            "  report: out/r.jsonl\n");
}

TEST(RunBatch, NamesThatAreNotUtf8AreRecorded) {
  Scratch s;
  copy("dp_tiny_cnn.pth", s / "zoo/caf\xe9.pth");  // Latin-1, as old file systems write it
  BatchSummary summary = run_batch(options_for(s));
  EXPECT_EQ(summary.converted.inputs, 1u);
  EXPECT_TRUE(fs::exists(s / "out/caf\xe9.pth"));
  EXPECT_NE(slurp(summary.report_path).find("\"path\":\"caf\xef\xbf\xbd.pth\""), std::string::npos);
  EXPECT_EQ(run_batch(options_for(s)).skipped.inputs, 1u);
}

TEST(RunBatch, NothingToConvertIsAnError) {
  Scratch s;
  put(s / "zoo/readme.txt", "x");
  EXPECT_EQ(error_of([&] { run_batch(options_for(s)); }),
            "1: batch: no input matches *.pth *.pth.tar *.pt *.bin *.ckpt *.safetensors in the "
            "given sources");
}

}  // namespace
}  // namespace ckpt::test
