// The safetensors header codec on headers written here byte by byte: the
// reference writer's byte-exact examples, one hostile header per check of the
// reference reader, and save_model's choice among names sharing storage.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ckpt/safetensors_codec.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

// A file: the length of `json`, `json`, then `data_size` zero bytes.
std::string file_of(const std::string& json, uint64_t data_size) {
  return le64(json.size()) + json + std::string(data_size, '\0');
}

SafetensorsHeader parse(const std::string& file) {
  return parse_safetensors_header(span_of(file), file.size());
}

// The error parsing `json` followed by `data_size` bytes gives.
std::string error_of(const std::string& json, uint64_t data_size) {
  std::string file = file_of(json, data_size);
  return format_error_of([&] { parse(file); });
}

SafetensorsEntry tensor(const std::string& name, const std::string& dtype,
                        std::vector<uint64_t> shape) {
  SafetensorsEntry entry;
  entry.name = name;
  entry.dtype_name = dtype;
  entry.shape = std::move(shape);
  return entry;
}

// --- The reference writer's byte-exact examples (reference notes 1.5) ---

TEST(SafetensorsWriter, EmptyDictIsSixteenBytes) {
  SafetensorsLayout layout = serialize_safetensors_header({}, std::nullopt);
  EXPECT_EQ(layout.header, le64(8) + "{}      ");
  EXPECT_EQ(layout.data_size, 0u);
}

TEST(SafetensorsWriter, EmptyDictWithMetadata) {
  SafetensorsLayout layout =
      serialize_safetensors_header({}, std::map<std::string, std::string>{{"framework", "pt"}});
  EXPECT_EQ(layout.header, le64(40) + "{\"__metadata__\":{\"framework\":\"pt\"}}     ");
}

TEST(SafetensorsWriter, OneFloatTensorAsTestInMemory) {
  SafetensorsLayout layout = serialize_safetensors_header({tensor("test", "F32", {2, 2})},
                                                          std::nullopt);
  EXPECT_EQ(layout.header,
            le64(64) + "{\"test\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}    ");
  EXPECT_EQ(layout.data_size, 16u);
}

TEST(SafetensorsWriter, EmptyMetadataIsWritten) {
  SafetensorsLayout layout =
      serialize_safetensors_header({}, std::map<std::string, std::string>{});
  EXPECT_EQ(layout.header, le64(24) + "{\"__metadata__\":{}}     ");
}

TEST(SafetensorsWriter, SaveFileWithFormatPt) {
  // save_file({"w": float16 [3], "b": float32 []}, metadata={"format": "pt"}).
  SafetensorsEntry w;
  w.name = "w";
  w.dtype = Dtype::k_float16;
  w.shape = {3};
  SafetensorsEntry b;
  b.name = "b";
  b.dtype = Dtype::k_float32;
  SafetensorsLayout layout =
      serialize_safetensors_header({w, b}, std::map<std::string, std::string>{{"format", "pt"}});
  std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
      "\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[4,10]}}";
  ASSERT_EQ(json.size(), 138u);
  EXPECT_EQ(layout.header, le64(144) + json + "      ");
  EXPECT_EQ(layout.order, (std::vector<size_t>{1, 0}));
  EXPECT_EQ(layout.data_size, 10u);
}

TEST(SafetensorsWriter, OrdersByDtypeDescendingThenName) {
  std::vector<SafetensorsEntry> in = {
      tensor("a", "F16", {1}),  tensor("b", "F32", {1}), tensor("c", "BOOL", {1}),
      tensor("d", "I64", {1}),  tensor("B", "F32", {1}), tensor("e", "F8_E4M3", {1}),
      tensor("f", "U8", {1}),   tensor("g", "BF16", {1}), tensor("h", "C64", {1}),
      tensor("i", "F4", {2}),
  };
  SafetensorsLayout layout = serialize_safetensors_header(in, std::nullopt);
  std::vector<std::string> names;
  std::vector<uint64_t> begins;
  for (const SafetensorsEntry& entry : layout.tensors) {
    names.push_back(entry.name);
    begins.push_back(entry.begin);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"d", "h", "B", "b", "g", "a", "e", "f", "i", "c"}));
  EXPECT_EQ(begins, (std::vector<uint64_t>{0, 8, 16, 20, 24, 26, 28, 29, 30, 31}));
  EXPECT_EQ(layout.order, (std::vector<size_t>{3, 8, 4, 1, 7, 0, 5, 6, 9, 2}));
  EXPECT_EQ(layout.data_size, 32u);
}

TEST(SafetensorsWriter, EscapesStringsAsSerdeJson) {
  SafetensorsLayout layout = serialize_safetensors_header(
      {tensor("q\"\\\n\x01\x7f\xc3\xa9", "U8", {0})},
      std::map<std::string, std::string>{{"k", "\t\b\f\r/"}});
  std::string json =
      "{\"__metadata__\":{\"k\":\"\\t\\b\\f\\r/\"},"
      "\"q\\\"\\\\\\n\\u0001\x7f\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
  json.resize((json.size() + 7) / 8 * 8, ' ');
  EXPECT_EQ(layout.header, le64(json.size()) + json);
}

TEST(SafetensorsWriter, RefusesWhatItCannotWrite) {
  EXPECT_EQ(format_error_of([] {
              serialize_safetensors_header({tensor("a", "F32", {1}), tensor("a", "F16", {1})},
                                           std::nullopt);
            }),
            "tensor 'a': named twice");
  EXPECT_EQ(format_error_of([] {
              serialize_safetensors_header({tensor("__metadata__", "F32", {1})}, std::nullopt);
            }),
            "tensor '__metadata__': the name is the header's metadata key");
  SafetensorsEntry complex;
  complex.name = "z";
  complex.dtype = Dtype::k_complex128;
  EXPECT_EQ(format_error_of([&] { serialize_safetensors_header({complex}, std::nullopt); }),
            "tensor 'z': dtype complex128 has no safetensors dtype");
  EXPECT_EQ(format_error_of([] {
              serialize_safetensors_header({tensor("f", "F4", {3})}, std::nullopt);
            }),
            "tensor 'f': shape [3] of F4 is 12 bits, not whole bytes");
  // A pickle's key may be any bytes (Python 2's str); the header is JSON,
  // which the reference reader takes as UTF-8 only. Valid UTF-8 passes
  // (EscapesStringsAsSerdeJson); a lone byte, a surrogate or an overlong not.
  for (std::string bad : {"tracke\xe4", "x\xed\xa0\x80", "\xc0\xaf"}) {
    EXPECT_NE(format_error_of([&] {
                serialize_safetensors_header({tensor(bad, "F32", {1})}, std::nullopt);
              }).find("the name is not valid UTF-8"),
              std::string::npos)
        << bad;
  }
  EXPECT_EQ(format_error_of([] {
              serialize_safetensors_header({tensor("bn.tracke\xe4", "F32", {1})}, std::nullopt);
            }),
            "tensor 'bn.tracke\\xe4': the name is not valid UTF-8, which the header's JSON must "
            "be (--drop it, or write .pth)");
  EXPECT_EQ(format_error_of([] {
              serialize_safetensors_header(
                  {tensor("w", "F32", {1})},
                  std::map<std::string, std::string>{{"format", "pt"}, {"w", "v\xff"}});
            }),
            "__metadata__: 'v\\xff' is not valid UTF-8, which the header's JSON must be");
}

TEST(SafetensorsWriter, RoundTripsThroughTheReader) {
  std::vector<SafetensorsEntry> in = {tensor("layer.weight", "BF16", {4, 3}),
                                      tensor("layer.bias", "F32", {4}),
                                      tensor("step", "I64", {}), tensor("empty", "F16", {0, 5})};
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  SafetensorsLayout layout = serialize_safetensors_header(in, metadata);
  std::string file = layout.header + std::string(layout.data_size, '\0');
  SafetensorsHeader header = parse(file);
  EXPECT_EQ(header.data_start, layout.header.size());
  EXPECT_EQ(header.data_size, layout.data_size);
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ(*header.metadata, metadata);
  ASSERT_EQ(header.tensors.size(), layout.tensors.size());
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const SafetensorsEntry& got = header.tensors[i];
    const SafetensorsEntry& want = layout.tensors[i];
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.dtype_name, want.dtype_name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(got.begin, want.begin);
    EXPECT_EQ(got.end, want.end);
  }
  EXPECT_EQ(header.tensors[0].name, "step");
  EXPECT_EQ(header.tensors[0].dtype, Dtype::k_int64);
}

// --- The reader: a header that passes every check ---

TEST(SafetensorsReader, RustDocExampleWithoutPadding) {
  // `SafeTensors::deserialize`'s doc example: N = 60, no padding (an old writer).
  std::string file =
      std::string("<\0\0\0\0\0\0\0", 8) +
      "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}" +
      std::string(16, '\0');
  SafetensorsHeader header = parse(file);
  EXPECT_EQ(header.header_size, 60u);
  EXPECT_EQ(header.data_start, 68u);
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].dtype, Dtype::k_int32);
  EXPECT_FALSE(header.metadata.has_value());
}

TEST(SafetensorsReader, AcceptsAHeaderThatPassesEveryRule) {
  // Offsets out of header order, leading and trailing whitespace, an unknown
  // field, a scalar, two zero-sized tensors at one offset, dtypes without a
  // ckpt dtype.
  std::string json =
      " \n{\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[6,10],\"extra\":[1,{}]},"
      "\"__metadata__\":{\"format\":\"pt\",\"b\":\"a\"},"
      "\"a\":{\"shape\":[3],\"dtype\":\"F16\",\"data_offsets\":[0,6]},"
      "\"z0\":{\"dtype\":\"F8_E8M0\",\"shape\":[0],\"data_offsets\":[10,10]},"
      "\"z1\":{\"dtype\":\"F4\",\"shape\":[2,0],\"data_offsets\":[10,10]},"
      "\"f\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[10,13]},"
      "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[13,14]}}\t\r ";
  SafetensorsHeader header = parse(file_of(json, 14));
  ASSERT_EQ(header.tensors.size(), 6u);
  std::vector<std::string> names;
  for (const SafetensorsEntry& entry : header.tensors) {
    names.push_back(entry.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"b", "a", "z0", "z1", "f", "e"}));
  EXPECT_EQ(header.tensors[0].dtype, Dtype::k_float32);
  EXPECT_TRUE(header.tensors[0].shape.empty());
  EXPECT_EQ(header.tensors[0].begin, 6u);
  EXPECT_EQ(header.tensors[0].end, 10u);
  EXPECT_EQ(header.tensors[1].shape, (std::vector<uint64_t>{3}));
  EXPECT_EQ(header.tensors[2].dtype_name, "F8_E8M0");
  EXPECT_FALSE(header.tensors[2].dtype.has_value());
  EXPECT_EQ(header.tensors[5].dtype, Dtype::k_float8_e4m3fn);
  EXPECT_EQ(*header.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"b", "a"}}));
}

TEST(SafetensorsReader, NullMetadataIsNoMetadata) {
  SafetensorsHeader header = parse(file_of("{\"__metadata__\":null}", 0));
  EXPECT_FALSE(header.metadata.has_value());
  EXPECT_TRUE(header.tensors.empty());
}

// --- The reader: one hostile header per rule, in the reference's order ---

TEST(SafetensorsReader, Rule1FileShorterThanTheLength) {
  std::string file("\x02\0\0\0", 4);
  EXPECT_EQ(format_error_of([&] { parse(file); }),
            "header@0: the file is 4 bytes, too short for the 8-byte header length");
}

TEST(SafetensorsReader, Rule2HeaderOverTheLimit) {
  std::string file = le64(100'000'001) + "{}";
  EXPECT_EQ(format_error_of([&] { parse(file); }),
            "header@0: header length 100000001 is over the reference reader's limit of "
            "100000000 bytes");
  std::string huge = le64(UINT64_MAX) + "{}";
  EXPECT_EQ(format_error_of([&] { parse(huge); }),
            "header@0: header length 18446744073709551615 is over the reference reader's limit "
            "of 100000000 bytes");
}

TEST(SafetensorsReader, Rule2ExactlyTheLimitIsAllowed) {
  // Exactly 10^8 passes rule 2 and fails only rule 3 in a short file.
  std::string file = le64(100'000'000) + "{}";
  EXPECT_EQ(format_error_of([&] { parse(file); }),
            "header@0: header length 100000000 runs past the end of the file (10 bytes)");
}

TEST(SafetensorsReader, Rule3HeaderPastTheEndOfTheFile) {
  std::string file = le64(3) + "{}";
  EXPECT_EQ(format_error_of([&] { parse(file); }),
            "header@0: header length 3 runs past the end of the file (10 bytes)");
}

TEST(SafetensorsReader, Rule4InvalidUtf8) {
  EXPECT_EQ(error_of("{\"a\xff\":1}", 0), "header@11: the header is not valid UTF-8");
  // A UTF-16 surrogate (U+D800) and an overlong NUL are not UTF-8 either.
  EXPECT_EQ(error_of("{\"\xed\xa0\x80\":1}", 0), "header@10: the header is not valid UTF-8");
  EXPECT_EQ(error_of("{\"\xc0\x80\":1}", 0), "header@10: the header is not valid UTF-8");
  EXPECT_EQ(error_of("{\"\xe2\x82", 0), "header@10: the header is not valid UTF-8");
}

TEST(SafetensorsReader, Rule5HeaderLengthZero) {
  EXPECT_EQ(error_of("", 0),
            "header@8: invalid JSON: syntax error while parsing value - unexpected end of "
            "input; expected '[', '{', or a literal");
}

TEST(SafetensorsReader, Rule5NotJson) {
  EXPECT_EQ(error_of("{\"a\":", 0),
            "header@13: invalid JSON: syntax error while parsing value - unexpected end of "
            "input; expected '[', '{', or a literal");
}

TEST(SafetensorsReader, Rule5NulPaddingIsNotWhitespace) {
  EXPECT_EQ(error_of(std::string("{}\0\0\0\0\0\0", 8), 0),
            "header@10: invalid JSON: a NUL byte");
  // nlohmann would stop at the NUL and accept what comes before it.
  EXPECT_EQ(error_of(std::string("{}\0{", 4), 0), "header@10: invalid JSON: a NUL byte");
  EXPECT_EQ(error_of(std::string("{\"a\0\":1}", 8), 0), "header@11: invalid JSON: a NUL byte");
  // An error before the NUL comes first.
  EXPECT_EQ(error_of(std::string("{]\0", 3), 0),
            "header@9: invalid JSON: syntax error while parsing object key - unexpected ']'; "
            "expected string literal");
}

TEST(SafetensorsReader, Rule5ByteOrderMark) {
  EXPECT_EQ(error_of("\xef\xbb\xbf{}", 0),
            "header@8: invalid JSON: a byte-order mark before the header");
}

TEST(SafetensorsReader, Rule5NotAnObject) {
  EXPECT_EQ(error_of("[]", 0), "header@8: the header is a list, not a JSON object");
}

TEST(SafetensorsReader, Rule5NestedPastSerdeJsonsLimit) {
  std::string deep = "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":" +
                     std::string(125, '[') + std::string(125, ']') + "}}";
  EXPECT_EQ(error_of(deep, 0), "no error");
  std::string deeper = "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":" +
                       std::string(126, '[') + std::string(126, ']') + "}}";
  EXPECT_EQ(error_of(deeper, 0),
            "header: JSON nested deeper than 127 levels (the reference reader's recursion limit)");
}

TEST(SafetensorsReader, Rule5UnknownDtype) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"F8_E4M3FN\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
            "tensor 'w': unknown dtype 'F8_E4M3FN', did you mean 'F8_E4M3'?");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
            "tensor 'w': unknown dtype 'f32', did you mean 'F32'?");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"C128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16),
            "tensor 'w': unknown dtype 'C128'");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"float32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
            "tensor 'w': unknown dtype 'float32'");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
            "tensor 'w': dtype is a number, not a string");
}

TEST(SafetensorsReader, Rule5BadShape) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0),
            "tensor 'w': shape is not a list of non-negative 64-bit integers");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2),
            "tensor 'w': shape is not a list of non-negative 64-bit integers");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],"
                     "\"data_offsets\":[0,0]}}",
                     0),
            "tensor 'w': shape is not a list of non-negative 64-bit integers");
}

TEST(SafetensorsReader, Rule5BadDataOffsets) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1),
            "tensor 'w': data_offsets is not a list of two non-negative 64-bit integers");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", 1),
            "tensor 'w': data_offsets is not a list of two non-negative 64-bit integers");
}

TEST(SafetensorsReader, Rule5MissingField) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
            "tensor 'w': no shape in its header entry");
}

TEST(SafetensorsReader, Rule5EntryNotAnObject) {
  EXPECT_EQ(error_of("{\"w\":[\"U8\",[1],[0,1]]}", 1),
            "tensor 'w': its header entry is a list, not an object of dtype, shape and "
            "data_offsets");
}

TEST(SafetensorsReader, Rule5MetadataValuesAreStrings) {
  EXPECT_EQ(error_of("{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0),
            "__metadata__: the value of 'n' is a number, not a string");
  EXPECT_EQ(error_of("{\"__metadata__\":{\"nested\":{}}}", 0),
            "__metadata__: the value of 'nested' is an object, not a string");
  EXPECT_EQ(error_of("{\"__metadata__\":[]}", 0),
            "__metadata__: is a list, not an object of strings");
}

TEST(SafetensorsReader, Rule5MetadataIsCheckedBeforeTensors) {
  // serde takes `__metadata__` out of the map as it meets it; tensors after.
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"X\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"__metadata__\":{\"n\":1}}",
                     1),
            "__metadata__: the value of 'n' is a number, not a string");
}

TEST(SafetensorsReader, DuplicateKeysAreRefused) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                     2),
            "tensor 'w': named twice in the header");
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],"
                     "\"data_offsets\":[0,1]}}",
                     1),
            "tensor 'w': field 'dtype' appears twice");
  EXPECT_EQ(error_of("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0),
            "__metadata__: key 'a' appears twice");
  EXPECT_EQ(error_of("{\"__metadata__\":{},\"__metadata__\":{}}", 0),
            "__metadata__: appears twice in the header");
}

TEST(SafetensorsReader, Rule7FirstTensorNotAtZero) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}}", 5),
            "tensor 'w': data_offsets [4, 5] leave bytes [0, 4) of the data to no tensor");
}

TEST(SafetensorsReader, Rule7Hole) {
  EXPECT_EQ(error_of("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
                     3),
            "tensor 'b': data_offsets [2, 3] leave bytes [1, 2) of the data to no tensor");
}

TEST(SafetensorsReader, Rule7Overlap) {
  EXPECT_EQ(error_of("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}",
                     3),
            "tensor 'b': data_offsets [1, 3] overlap tensor 'a', which ends at 2");
}

TEST(SafetensorsReader, Rule7EndBeforeBegin) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                     "\"v\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,0]}}",
                     1),
            "tensor 'v': data_offsets [1, 0] end before they begin");
}

TEST(SafetensorsReader, Rule7ShapeProductOverflows) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],"
                     "\"data_offsets\":[0,0]}}",
                     0),
            "tensor 'w': shape [4294967296, 4294967296, 0] of U8 overflows 64 bits");
}

TEST(SafetensorsReader, Rule7BitsOverflow) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952],"
                     "\"data_offsets\":[0,0]}}",
                     0),
            "tensor 'w': shape [2305843009213693952] of F32 overflows 64 bits");
}

TEST(SafetensorsReader, Rule7SubByteTensorNotWholeBytes) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"F6_E2M3\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2),
            "tensor 'w': shape [3] of F6_E2M3 is 18 bits, not whole bytes");
}

TEST(SafetensorsReader, Rule7SizeDisagreesWithShape) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12),
            "tensor 'w': data_offsets [0, 12] span 12 bytes, but shape [2, 2] of F32 takes 16");
}

TEST(SafetensorsReader, Rule8TrailingBytes) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 3),
            "data@62: 2 bytes after the last tensor's data belong to no tensor");
  EXPECT_EQ(error_of("{}", 1), "data@10: 1 byte after the last tensor's data belong to no tensor");
}

TEST(SafetensorsReader, Rule8OffsetsPastTheEnd) {
  EXPECT_EQ(error_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
            "tensor 'w': data_offsets [0, 16] run past the end of the file: the data buffer "
            "holds 8 bytes (truncated file?)");
}

TEST(SafetensorsReader, GitLfsPointer) {
  std::string file =
      "version https://git-lfs.github.com/spec/v1\n"
      "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
      "size 12345\n";
  EXPECT_EQ(format_error_of([&] { parse(file); }),
            "a git-lfs pointer, not the file: run git lfs pull");
}

TEST(SafetensorsReader, NeedsOnlyTheHeaderBytes) {
  SafetensorsLayout layout =
      serialize_safetensors_header({tensor("w", "F32", {1000})}, std::nullopt);
  uint64_t file_size = layout.header.size() + 4000;
  EXPECT_EQ(safetensors_prefix_size(span_of(layout.header), file_size), layout.header.size());
  SafetensorsHeader header = parse_safetensors_header(span_of(layout.header), file_size);
  EXPECT_EQ(header.tensors.at(0).end, 4000u);
}

// --- Sniffing ---

TEST(SafetensorsSniff, LooksLikeSafetensors) {
  std::string file = serialize_safetensors_header({}, std::nullopt).header;
  EXPECT_TRUE(looks_like_safetensors(span_of(file), file.size()));
  std::string padded = file_of("  {}", 0);
  EXPECT_TRUE(looks_like_safetensors(span_of(padded), padded.size()));
  std::string zip = "PK\x03\x04" + std::string(60, '\0');
  EXPECT_FALSE(looks_like_safetensors(span_of(zip), zip.size()));
  std::string pickle = "\x80\x02}q\x00(X" + std::string(60, 'a');
  EXPECT_FALSE(looks_like_safetensors(span_of(pickle), pickle.size()));
  std::string text = "12345678 hello";
  EXPECT_FALSE(looks_like_safetensors(span_of(text), text.size()));
}

// A `{` after the length claims the file whatever the length, so that the
// reader says what is wrong with it; a `[` only with a sane length.
TEST(SafetensorsSniff, ClaimsBrokenLengthsAndListsForTheReaderToName) {
  std::string past_end = le64(100) + "{}";
  EXPECT_TRUE(looks_like_safetensors(span_of(past_end), past_end.size()));
  EXPECT_EQ(format_error_of([&] { parse(past_end); }),
            "header@0: header length 100 runs past the end of the file (10 bytes)");
  std::string over_limit = le64(100'000'001) + " {}";
  EXPECT_TRUE(looks_like_safetensors(span_of(over_limit), over_limit.size()));
  EXPECT_EQ(format_error_of([&] { parse(over_limit); }),
            "header@0: header length 100000001 is over the reference reader's limit of "
            "100000000 bytes");
  std::string list = file_of("[]", 0);
  EXPECT_TRUE(looks_like_safetensors(span_of(list), list.size()));
  EXPECT_EQ(format_error_of([&] { parse(list); }), "header@8: the header is a list, not a JSON object");
  std::string list_past_end = le64(100) + "[]";
  EXPECT_FALSE(looks_like_safetensors(span_of(list_past_end), list_past_end.size()));
  std::string list_over_limit = le64(100'000'001) + "[]";
  EXPECT_FALSE(looks_like_safetensors(span_of(list_over_limit), list_over_limit.size()));
  std::string marked = file_of("\xef\xbb\xbf{}", 0);
  EXPECT_TRUE(looks_like_safetensors(span_of(marked), marked.size()));
  EXPECT_EQ(format_error_of([&] { parse(marked); }),
            "header@8: invalid JSON: a byte-order mark before the header");
}

// --- Dtype names ---

TEST(SafetensorsDtypes, NamesBothWays) {
  EXPECT_EQ(safetensors_dtype_name(Dtype::k_bfloat16), "BF16");
  EXPECT_EQ(safetensors_dtype_name(Dtype::k_float8_e4m3fn), "F8_E4M3");
  EXPECT_EQ(safetensors_dtype_name(Dtype::k_float8_e5m2fnuz), "F8_E5M2FNUZ");
  EXPECT_EQ(safetensors_dtype_name(Dtype::k_complex64), "C64");
  EXPECT_FALSE(safetensors_dtype_name(Dtype::k_complex128).has_value());
  EXPECT_FALSE(safetensors_dtype_name(Dtype::k_qint8).has_value());
  EXPECT_EQ(dtype_of_safetensors_name("U16"), Dtype::k_uint16);
  EXPECT_FALSE(dtype_of_safetensors_name("F4").has_value());
  EXPECT_FALSE(dtype_of_safetensors_name("f32").has_value());
  EXPECT_EQ(safetensors_dtype_bits("F6_E3M2"), 6);
  EXPECT_EQ(safetensors_dtype_bits("nope"), 0);
}

// --- save_model's choice of names (reference notes 2.3) ---

TEST(SafetensorsKeptName, SmallestCompleteNameAsTestWorkaround) {
  KeptName choice = choose_kept_name({{"b.weight", true}, {"a.weight", true}});
  EXPECT_EQ(choice.kept, "a.weight");
  EXPECT_EQ(choice.removed, (std::vector<std::string>{"b.weight"}));
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  add_removed_names(metadata, choice);
  add_removed_names(metadata, choose_kept_name({{"b.bias", true}, {"a.bias", true}}));
  EXPECT_EQ(metadata, (std::map<std::string, std::string>{
                          {"format", "pt"}, {"b.bias", "a.bias"}, {"b.weight", "a.weight"}}));
}

TEST(SafetensorsKeptName, PlainSaveModelKeepsLmHead) {
  KeptName choice =
      choose_kept_name({{"model.embed_tokens.weight", true}, {"lm_head.weight", true}});
  EXPECT_EQ(choice.kept, "lm_head.weight");
}

TEST(SafetensorsKeptName, DiscardNamesSteerTheChoice) {
  KeptName choice = choose_kept_name(
      {{"model.embed_tokens.weight", true}, {"lm_head.weight", true}}, {}, {"lm_head.weight"});
  EXPECT_EQ(choice.kept, "model.embed_tokens.weight");
  EXPECT_EQ(choice.removed, (std::vector<std::string>{"lm_head.weight"}));
  // All complete names discarded: the smallest one still.
  EXPECT_EQ(choose_kept_name({{"b", true}, {"a", true}}, {}, {"a", "b"}).kept, "a");
}

TEST(SafetensorsKeptName, PreferredNamesOverrideDiscard) {
  KeptName choice = choose_kept_name({{"a", true}, {"b", true}, {"c", true}}, {"c"}, {"a", "c"});
  EXPECT_EQ(choice.kept, "c");
  EXPECT_EQ(choice.removed, (std::vector<std::string>{"a", "b"}));
  // A preferred name that is not complete is not kept.
  EXPECT_EQ(choose_kept_name({{"a", true}, {"b", false}}, {"b"}).kept, "a");
}

TEST(SafetensorsKeptName, OnlyCompleteNamesCanBeKept) {
  KeptName choice = choose_kept_name({{"a", false}, {"b", true}});
  EXPECT_EQ(choice.kept, "b");
  EXPECT_EQ(choice.removed, (std::vector<std::string>{"a"}));
}

TEST(SafetensorsKeptName, NoCompleteNameIsRefused) {
  EXPECT_EQ(format_error_of([] { choose_kept_name({{"b", false}, {"a", false}}); }),
            "tensors 'a', 'b' share storage and none covers all of it: no name to keep");
  // Even a group of one: save_model refuses a lone partial view.
  EXPECT_EQ(format_error_of([] { choose_kept_name({{"a", false}}); }),
            "tensor 'a' covers only part of its storage: save_model keeps no such tensor");
}

TEST(SafetensorsKeptName, UserMetadataIsNotOverridden) {
  std::map<std::string, std::string> metadata = {{"b", "mine"}};
  add_removed_names(metadata, choose_kept_name({{"a", true}, {"b", true}}));
  EXPECT_EQ(metadata.at("b"), "mine");
}

}  // namespace
}  // namespace ckpt::test
