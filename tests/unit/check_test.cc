// `check`: expected-keys files, the NaN/Inf scan over raw bytes of every
// float format, and the checks on real checkpoints (tests/data).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "ckpt/check.h"
#include "ckpt/error.h"
#include "ckpt/torch_plugin.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

const std::string k_data = CKPT_TEST_DATA;

std::string usage_error_of(const std::string& name, const std::string& text) {
  try {
    parse_expected_keys(name, text);
  } catch (const Error& e) {
    return std::string(e.status() == ExitStatus::k_usage ? "usage: " : "other: ") + e.what();
  }
  return "no error";
}

std::string describe(const ExpectedEntry& e) {
  std::string out = e.key;
  if (e.sizes) {
    out += " [";
    for (size_t i = 0; i < e.sizes->size(); ++i) {
      out += (i == 0 ? "" : ",") + std::to_string((*e.sizes)[i]);
    }
    out += "]";
  }
  if (e.dtype) {
    out += " " + std::string(dtype_name(*e.dtype));
  }
  return out;
}

std::vector<std::string> describe_all(const ExpectedKeys& keys) {
  std::vector<std::string> out;
  for (const ExpectedEntry& e : keys.entries) {
    out.push_back(describe(e));
  }
  return out;
}

TEST(ExpectedKeys, TextAsPythonPrintsIt) {
  ExpectedKeys keys = parse_expected_keys("keys.txt",
                                          "# for k, v in sd.items(): print(k, list(v.shape), v.dtype)\n"
                                          "conv.weight [8, 3, 3, 3] torch.float32\n"
                                          "\n"
                                          "bn.num_batches_tracked [] torch.int64\r\n"
                                          "fc.bias torch.Size([10])\n"
                                          "fc.weight (10, 8) half\n"
                                          "emb.weight (5,)\n"
                                          "  plain.key  \n");
  EXPECT_EQ(keys.source, "keys.txt");
  EXPECT_EQ(describe_all(keys),
            (std::vector<std::string>{"conv.weight [8,3,3,3] float32", "bn.num_batches_tracked [] int64",
                                      "fc.bias [10]", "fc.weight [10,8] float16", "emb.weight [5]",
                                      "plain.key"}));
}

TEST(ExpectedKeys, EveryBadLineIsListed) {
  EXPECT_EQ(usage_error_of("keys.txt",
                           "a [1, x]\n"
                           "b [1, 2\n"
                           "c [1] flaot32\n"
                           "d [2] float32 extra\n"
                           "a.ok [1]\n"
                           "a.ok [1]\n"),
            "usage: keys.txt:1: 'a': 'x' is not a dimension\n"
            "keys.txt:2: 'b': the shape has no closing ']'\n"
            "keys.txt:3: 'c': unknown dtype 'flaot32', did you mean 'float32'?\n"
            "keys.txt:4: 'd': unexpected 'extra' after the dtype (expected: KEY [SHAPE] [DTYPE])\n"
            "keys.txt:6: key 'a.ok' is listed twice");
}

TEST(ExpectedKeys, JsonObjectOfShapesOrArrayOfKeys) {
  ExpectedKeys object = parse_expected_keys(
      "k.json", R"({"w": [2, 3], "b": null, "n": {"shape": [], "dtype": "int64"}})");
  EXPECT_EQ(describe_all(object), (std::vector<std::string>{"w [2,3]", "b", "n [] int64"}));
  ExpectedKeys array = parse_expected_keys("k.json", R"( ["x", "y"] )");
  EXPECT_EQ(describe_all(array), (std::vector<std::string>{"x", "y"}));
}

TEST(ExpectedKeys, JsonErrorsNameTheFile) {
  EXPECT_EQ(usage_error_of("k.json", R"({"w": [2, -3], "v": "big"})"),
            "usage: k.json: 'w': the shape must be an array of dimensions or null\n"
            "k.json: 'v': the shape must be an array of dimensions or null");
  EXPECT_EQ(usage_error_of("k.json", R"([1])"),
            "usage: k.json: an array of expected keys must hold only strings");
  EXPECT_EQ(usage_error_of("k.json", "{").substr(0, 34), "usage: k.json@2: not valid JSON: [");
}

TEST(DtypeName, TorchNamesAndAliases) {
  EXPECT_EQ(parse_dtype_name("half"), Dtype::k_float16);
  EXPECT_EQ(parse_dtype_name("torch.bfloat16"), Dtype::k_bfloat16);
  EXPECT_EQ(parse_dtype_name("float"), Dtype::k_float32);
  EXPECT_EQ(parse_dtype_name("fp16"), Dtype::k_float16);
  EXPECT_EQ(parse_dtype_name("float16"), Dtype::k_float16);
  EXPECT_EQ(parse_dtype_name("torch.float16"), Dtype::k_float16);
  EXPECT_EQ(parse_dtype_name("bf16"), Dtype::k_bfloat16);
  EXPECT_EQ(parse_dtype_name("bfloat16"), Dtype::k_bfloat16);
  EXPECT_EQ(parse_dtype_name("fp32"), Dtype::k_float32);
  try {
    parse_dtype_name("flaot16");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_usage);
    EXPECT_STREQ(e.what(), "--dtype: unknown dtype 'flaot16', did you mean 'float16'?");
  }
  EXPECT_TRUE(is_floating_dtype(Dtype::k_bfloat16));
  EXPECT_TRUE(is_floating_dtype(Dtype::k_float8_e4m3fn));
  EXPECT_FALSE(is_floating_dtype(Dtype::k_int64));
  EXPECT_FALSE(is_floating_dtype(Dtype::k_complex64));
}

// A tensor over `bytes` (kept alive by the caller's Storage).
struct RawTensor {
  Storage storage;
  std::string bytes;
  TensorRef ref;

  template <typename T>
  RawTensor(Dtype dtype, std::vector<T> values, std::vector<int64_t> sizes,
            std::vector<int64_t> strides = {}, int64_t offset = 0) {
    bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
    storage.dtype = dtype;
    storage.bytes = span_of(bytes);
    ref.storage = &storage;
    ref.dtype = dtype;
    ref.sizes = std::move(sizes);
    if (strides.empty()) {
      int64_t stride = 1;
      strides.resize(ref.sizes.size());
      for (size_t d = ref.sizes.size(); d-- > 0;) {
        strides[d] = stride;
        stride *= ref.sizes[d];
      }
    }
    ref.strides = std::move(strides);
    ref.offset = offset;
  }
};

std::string summary(const NonFinite& f) {
  std::string out = std::to_string(f.nan) + " nan " + std::to_string(f.inf) + " inf";
  if (f.nan + f.inf != 0) {
    out += " first";
    for (int64_t i : f.first) {
      out += " " + std::to_string(i);
    }
  }
  return out;
}

TEST(NonFinite, Float32And64) {
  float nan = std::nanf("");
  float inf = INFINITY;
  RawTensor f32(Dtype::k_float32, std::vector<float>{1, 2, -inf, 4, nan, 6}, {2, 3});
  EXPECT_EQ(summary(count_non_finite(f32.ref)), "1 nan 1 inf first 0 2");
  RawTensor clean(Dtype::k_float32, std::vector<float>{1, 2, 3e38f, -0.0f}, {4});
  EXPECT_EQ(summary(count_non_finite(clean.ref)), "0 nan 0 inf");
  RawTensor f64(Dtype::k_float64, std::vector<double>{1, std::nan(""), 3}, {3});
  EXPECT_EQ(summary(count_non_finite(f64.ref)), "1 nan 0 inf first 1");
}

TEST(NonFinite, HalfBfloatAndFloat8BitPatterns) {
  // float16: 0x7c00 +inf, 0xfe00 NaN, 0x7bff the largest finite
  RawTensor f16(Dtype::k_float16, std::vector<uint16_t>{0x3c00, 0x7bff, 0x7c00, 0xfe00}, {4});
  EXPECT_EQ(summary(count_non_finite(f16.ref)), "1 nan 1 inf first 2");
  // bfloat16: 0xff80 -inf, 0x7fc0 NaN, 0x7f7f the largest finite
  RawTensor bf16(Dtype::k_bfloat16, std::vector<uint16_t>{0x7f7f, 0x7fc0, 0xff80}, {3});
  EXPECT_EQ(summary(count_non_finite(bf16.ref)), "1 nan 1 inf first 1");
  // e5m2 has Inf (0x7c) and NaN (0x7d); e4m3fn only NaN (0x7f, 0xff); 0x7e is finite (448)
  RawTensor e5m2(Dtype::k_float8_e5m2, std::vector<uint8_t>{0x7b, 0x7c, 0x7d}, {3});
  EXPECT_EQ(summary(count_non_finite(e5m2.ref)), "1 nan 1 inf first 1");
  RawTensor e4m3(Dtype::k_float8_e4m3fn, std::vector<uint8_t>{0x7e, 0x7f, 0xff, 0x80}, {4});
  EXPECT_EQ(summary(count_non_finite(e4m3.ref)), "2 nan 0 inf first 1");
  // fnuz: 0x80 is the one NaN, 0x7f finite
  RawTensor fnuz(Dtype::k_float8_e4m3fnuz, std::vector<uint8_t>{0x7f, 0x80, 0xff}, {3});
  EXPECT_EQ(summary(count_non_finite(fnuz.ref)), "1 nan 0 inf first 1");
}

TEST(NonFinite, ComplexCountsElementsNotParts) {
  float inf = INFINITY;
  // three complex64 elements: (1,2) (3,inf) (nan,inf)
  RawTensor c64(Dtype::k_complex64, std::vector<float>{1, 2, 3, inf, std::nanf(""), inf}, {3});
  EXPECT_EQ(summary(count_non_finite(c64.ref)), "1 nan 1 inf first 1");
}

TEST(NonFinite, ViewsReadOnlyTheirElements) {
  float nan = std::nanf("");
  // storage 0..8 with NaN at 1 and 4; the view [2,2] offset 2 stride (3,1) holds 2,3,5,6
  RawTensor view(Dtype::k_float32, std::vector<float>{0, nan, 2, 3, nan, 5, 6, 7, 8}, {2, 2},
                 {3, 1}, 2);
  EXPECT_EQ(summary(count_non_finite(view.ref)), "0 nan 0 inf");
  // transposed: sizes (3,3) strides (1,3); [1][0] is storage 1, [1][1] storage 4
  RawTensor transposed(Dtype::k_float32, std::vector<float>{0, nan, 2, 3, nan, 5, 6, 7, 8}, {3, 3},
                       {1, 3});
  EXPECT_EQ(summary(count_non_finite(transposed.ref)), "2 nan 0 inf first 1 0");
}

TEST(NonFinite, IntegerTensorsHaveNone) {
  RawTensor ints(Dtype::k_int32, std::vector<int32_t>{0x7f800000, -1}, {2});
  EXPECT_EQ(summary(count_non_finite(ints.ref)), "0 nan 0 inf");
}

std::vector<std::string> messages(const CheckReport& report) {
  std::vector<std::string> out;
  for (const CheckProblem& p : report.problems) {
    out.push_back(std::string(check_problem_name(p.kind)) + ": " + p.message);
  }
  return out;
}

TEST(CheckCheckpoint, DataParallelFileAgainstThePlainModelIsOneHint) {
  // Every key starts with module.: one line saying to convert, not 3 missing
  // and 9 unexpected lines (before: every key listed).
  CheckOptions options;
  options.path = k_data + "/dp_tiny_cnn.pth";
  options.expected = parse_expected_keys("keys.txt",
                                         "conv.weight [8, 3, 3, 3]\n"
                                         "conv.bias [8]\n"
                                         "fc.weight [12, 8]\n");
  CheckReport report = check_checkpoint(options);
  EXPECT_EQ(report.state_dict, "(top level)");
  EXPECT_EQ(report.keys, 9u);
  std::vector<std::string> hint = {"wrapper: every key starts with 'module.' (a DataParallel/DDP "
                                   "wrapper): convert first: ckpt-convert " +
                                   options.path + " OUT"};
  EXPECT_EQ(messages(report), hint);
  EXPECT_EQ(report.problems[0].key, "");
  options.no_wrapper_prefixes = true;  // the same one line, not one per key
  EXPECT_EQ(messages(check_checkpoint(options)), hint);
  options.expected.reset();
  EXPECT_EQ(messages(check_checkpoint(options)), hint);
}

TEST(CheckCheckpoint, WrappedModelExpectedComparesKeys) {
  // Expected keys that carry the prefix too (a model wrapped before it loads):
  // compared key by key, as load_state_dict(strict=True) does.
  CheckOptions options;
  options.path = k_data + "/dp_tiny_cnn.pth";
  options.expected = parse_expected_keys("keys.txt",
                                         "module.conv.weight [8, 3, 3, 3]\n"
                                         "module.conv.bias [8]\n"
                                         "module.fc.weight [12, 8]\n"
                                         "module.extra.weight [2]\n");
  CheckReport report = check_checkpoint(options);
  EXPECT_EQ(messages(report),
            (std::vector<std::string>{
                "missing: missing key 'module.extra.weight' (expected shape [2])",
                "unexpected: unexpected key 'module.bn.weight'",
                "unexpected: unexpected key 'module.bn.bias'",
                "unexpected: unexpected key 'module.bn.running_mean'",
                "unexpected: unexpected key 'module.bn.running_var'",
                "unexpected: unexpected key 'module.bn.num_batches_tracked'",
                "unexpected: unexpected key 'module.fc.bias'",
                "shape: size mismatch for 'module.fc.weight': [10, 8] in the file, [12, 8] expected",
            }));
  EXPECT_EQ(check_failure_message(report).substr(0, options.path.size() + 2), options.path + ": ");
}

TEST(CheckCheckpoint, WrapperHintNamesEachWrapper) {
  CheckOptions options;
  options.no_wrapper_prefixes = true;
  options.path = k_data + "/fsdp_style.pth";
  EXPECT_EQ(messages(check_checkpoint(options)),
            (std::vector<std::string>{"wrapper: every key starts with '_fsdp_wrapped_module.' (an "
                                      "FSDP wrapper): convert first: ckpt-convert " +
                                      options.path + " OUT"}));
  options.path = k_data + "/lightning_fabric.pth";
  EXPECT_EQ(messages(check_checkpoint(options)),
            (std::vector<std::string>{"wrapper: every key starts with '_forward_module.' (a "
                                      "Lightning Fabric wrapper): convert first: ckpt-convert " +
                                      options.path + " OUT --strip _forward_module."}));
}

TEST(CheckCheckpoint, WrapperPrefixesAndDtype) {
  CheckOptions options;
  options.path = k_data + "/orig_mod_module.pth";
  options.no_wrapper_prefixes = true;
  options.dtype = Dtype::k_float16;
  CheckReport report = check_checkpoint(options);
  std::vector<std::string> got = messages(report);
  ASSERT_EQ(got.size(), 9u);  // one wrapper hint, 8 floating-point tensors of another dtype
  EXPECT_EQ(got[0], "wrapper: every key starts with '_orig_mod.' (a torch.compile wrapper): "
                    "convert first: ckpt-convert " + options.path + " OUT");
  EXPECT_EQ(got[1], "dtype: dtype mismatch for '_orig_mod.module.conv.weight': float32, expected "
                    "float16 (--dtype)");
}

TEST(CheckCheckpoint, ExpectedDtypesAreNotCompared) {
  // load_state_dict(strict=True) casts on copy: float16 expected, float32 in
  // the file passes; --dtype float16 fails it (before: a dtype problem each).
  CheckOptions options;
  options.path = k_data + "/clean_cpu.pth";
  options.expected = parse_expected_keys(
      "keys.txt",
      "conv.weight [8, 3, 3, 3] torch.float16\nconv.bias [8] torch.float16\n"
      "bn.weight [8] half\nbn.bias [8]\nbn.running_mean [8]\nbn.running_var [8]\n"
      "bn.num_batches_tracked [] torch.int32\nfc.weight [10, 8]\nfc.bias [10] torch.float64\n");
  EXPECT_EQ(messages(check_checkpoint(options)), std::vector<std::string>{});
  options.dtype = Dtype::k_float16;
  CheckReport report = check_checkpoint(options);
  ASSERT_EQ(report.problems.size(), 8u);  // the 8 float32 tensors; not the int64 counter
  EXPECT_EQ(messages(report)[0],
            "dtype: dtype mismatch for 'conv.weight': float32, expected float16 (--dtype)");
}

TEST(CheckCheckpoint, CleanFilePassesEveryCheck) {
  CheckOptions options;
  options.path = k_data + "/clean_cpu.pth";
  options.no_wrapper_prefixes = true;
  options.finite = true;
  options.dtype = Dtype::k_float32;
  options.expected = parse_expected_keys(
      "keys.txt",
      "conv.weight [8, 3, 3, 3]\nconv.bias [8]\nbn.weight [8]\nbn.bias [8]\nbn.running_mean [8]\n"
      "bn.running_var [8]\nbn.num_batches_tracked []\nfc.weight [10, 8]\nfc.bias [10]\n");
  CheckReport report = check_checkpoint(options);
  EXPECT_TRUE(report.passed()) << check_failure_message(report);
  EXPECT_EQ(report.tensors, 9u);
  EXPECT_EQ(report.storages_crc_checked, 9u);
  EXPECT_EQ(format_check_text(report),
            options.path +
                ": check passed (state dict (top level), 9 keys, 9 tensors, 0.0 MB): keys and "
                "shapes as in keys.txt, floating-point tensors float32, no wrapper prefixes, no NaN "
                "or Inf, 9 records CRC-32 checked, no globals that run code, locations restorable "
                "here\n");
}

TEST(CheckCheckpoint, CodeRunningGlobalIsAProblem) {
  CheckOptions options;
  options.path = k_data + "/bad/os_system.pth";
  CheckReport report = check_checkpoint(options);
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(report.problems[0].kind, CheckProblemKind::k_global);
  EXPECT_EQ(report.problems[0].message,
            "global os.system (at [\"hook\"]) would be imported, and may run code, by torch.load "
            "without weights_only");
  options.allowed_globals = {"os.system"};
  EXPECT_TRUE(check_checkpoint(options).passed());
}

TEST(CheckCheckpoint, NoStateDictNamesTheOption) {
  CheckOptions options;
  options.path = k_data + "/imagenet_checkpoint.pth";
  options.state_dict_key = "ema";
  try {
    check_checkpoint(options);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_bad_input);
    EXPECT_EQ(std::string(e.what()).substr(k_data.size()),
              "/imagenet_checkpoint.pth:imagenet_checkpoint/data.pkl: no top-level key 'ema' to extract");
  }
}

CheckReport report_of(const std::string& path, std::vector<CheckProblemKind> kinds,
                      const std::string& error = "") {
  CheckReport report;
  report.path = path;
  report.error = error;
  for (CheckProblemKind kind : kinds) {
    report.problems.push_back({kind, "", "a problem"});
  }
  return report;
}

TEST(CheckSummary, FilesThenProblemsByKindInFixedOrder) {
  using K = CheckProblemKind;
  EXPECT_EQ(format_check_summary({report_of("a.pth", {})}), "check: 1 file, 1 passed, 0 failed\n");
  EXPECT_EQ(format_check_summary({}), "check: 0 files, 0 passed, 0 failed\n");
  std::vector<CheckReport> three = {
      report_of("a.pth", {}),
      report_of("b.pth", {K::k_shape, K::k_missing, K::k_location, K::k_missing}),
      report_of("c.pth", {K::k_unexpected, K::k_wrapper, K::k_non_finite, K::k_dtype}),
  };
  EXPECT_EQ(format_check_summary(three),
            "check: 3 files, 1 passed, 2 failed: 2 missing, 1 unexpected, 1 shape, 1 dtype, "
            "1 wrapper, 1 non_finite, 1 location\n");
  EXPECT_EQ(check_exit_status(three), ExitStatus::k_verify_failed);
  three.push_back(report_of("d.pth", {}, "d.pth: not a checkpoint"));
  EXPECT_EQ(format_check_summary(three),
            "check: 4 files, 1 passed, 2 failed, 1 unreadable: 2 missing, 1 unexpected, 1 shape, "
            "1 dtype, 1 wrapper, 1 non_finite, 1 location\n");
  EXPECT_EQ(check_exit_status(three), ExitStatus::k_verify_failed);
}

TEST(CheckSummary, ExitStatusOfARun) {
  EXPECT_EQ(check_exit_status({}), ExitStatus::k_ok);
  EXPECT_EQ(check_exit_status({report_of("a.pth", {}), report_of("b.pth", {})}), ExitStatus::k_ok);
  // an unreadable file alone (or beside files that pass) is bad input, as before
  EXPECT_EQ(check_exit_status({report_of("a.pth", {}), report_of("b.pth", {}, "b.pth: bad")}),
            ExitStatus::k_bad_input);
  // a failed check wins over an unreadable file: the gate failed
  EXPECT_EQ(check_exit_status({report_of("a.pth", {}, "a.pth: bad"),
                               report_of("b.pth", {CheckProblemKind::k_global})}),
            ExitStatus::k_verify_failed);
}

TEST(CheckSummary, EveryKindHasAName) {
  std::vector<std::string> names;
  for (CheckProblemKind kind : check_problem_kinds()) {
    names.emplace_back(check_problem_name(kind));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"missing", "unexpected", "shape", "dtype", "wrapper",
                                             "non_finite", "global", "corrupt", "device",
                                             "location"}));
}

}  // namespace
}  // namespace ckpt::test

namespace ckpt::test {

TEST(DeviceName, CpuAndCudaWithOptionalIndex) {
  EXPECT_TRUE(is_cpu_device("cpu"));
  EXPECT_TRUE(is_cpu_device("cpu:0"));
  EXPECT_FALSE(is_cpu_device("cuda"));
  EXPECT_FALSE(is_cpu_device("cuda:12"));
  for (const char* bad : {"", "gpu", "cuda:", "cuda:x", "cuda:1:2", "CPU", "cuda:-1", " cpu"}) {
    try {
      is_cpu_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), ExitStatus::k_usage) << bad;
      EXPECT_NE(std::string(e.what()).find("invalid --device"), std::string::npos) << bad;
    }
  }
}

}  // namespace ckpt::test
