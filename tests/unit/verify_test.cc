// Verification of a written checkpoint: it passes on a faithful copy, and a
// damaged byte is blamed on the right file (the output: exit 3; the input,
// whose record CRC-32 no longer matches: exit 1), for zip and legacy inputs,
// for small storages (compared in place) and large ones (read from the files,
// from 1 MiB in two halves on two threads); and casts checked as they were
// written (CastCheck), which verification proves by the output alone.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/dtype.h"
#include "ckpt/pickle.h"
#include "ckpt/reread_behind.h"
#include "ckpt/verify.h"
#include "ckpt/writer.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

const std::string k_data = CKPT_TEST_DATA;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A file name in a fresh temporary folder, removed with it.
class ScratchFile {
public:
  explicit ScratchFile(const char* name) {
    std::string pattern = ::testing::TempDir() + "verify_test_XXXXXX";
    m_dir = ::mkdtemp(pattern.data());
    m_path = m_dir + "/" + name;
  }
  ~ScratchFile() {
    std::remove(m_path.c_str());
    ::rmdir(m_dir.c_str());
  }
  const std::string& path() const { return m_path; }

private:
  std::string m_dir;
  std::string m_path;
};

// Converts `input` (no rules) to `output` as convert() does, without
// verifying; returns the input, whose graph the verification compares with.
Checkpoint write_copy(const std::string& input, const std::string& output) {
  Checkpoint in = read_checkpoint(input);
  EncodedPickle encoded = encode_pickle(in.graph.root);
  int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EXPECT_GE(fd, 0);
  write_checkpoint(encoded, fd, output);
  ::close(fd);
  return in;
}

VerifyReport verify(const Checkpoint& input, const std::string& output) {
  return verify_output(input.tensors, encode_pickle(input.graph.root).bytes, output, output, "cpu",
                       {input.path, input.path + ":archive/data/"});
}

// The exit status and message verification fails with, or {0, ""}.
std::pair<ExitStatus, std::string> failure_of(const Checkpoint& input, const std::string& output) {
  try {
    verify(input, output);
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  return {ExitStatus::k_ok, ""};
}

// Where the first storage of `path` starts in the file.
uint64_t first_storage_offset(const std::string& path) {
  Checkpoint ckpt = read_checkpoint(path);
  EXPECT_FALSE(ckpt.tensors.empty());
  return ckpt.tensors.at(0).storage->file_offset;
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::string bytes = slurp(path);
  bytes.at(offset) = static_cast<char>(bytes.at(offset) ^ 0x40);
  spit(path, bytes);
}

TEST(Verify, AFaithfulCopyPasses) {
  for (const char* name : {"dp_tiny_cnn.pth", "legacy_dp.pth", "tied_weights.pth", "views.pth"}) {
    ScratchFile out("out.pth");
    Checkpoint input = write_copy(k_data + "/" + name, out.path());
    VerifyReport report = verify(input, out.path());
    EXPECT_EQ(report.tensors, input.tensors.size()) << name;
    EXPECT_GT(report.bytes, 0u) << name;
  }
}

TEST(Verify, ADamagedOutputFailsVerification) {
  for (const char* name : {"dp_tiny_cnn.pth", "legacy_dp.pth"}) {
    ScratchFile out("out.pth");
    Checkpoint input = write_copy(k_data + "/" + name, out.path());
    flip_byte(out.path(), first_storage_offset(out.path()) + 3);
    auto [status, message] = failure_of(input, out.path());
    EXPECT_EQ(status, ExitStatus::k_verify_failed) << name << ": " << message;
    EXPECT_NE(message.find("data/0 differs from its source near byte 0"), std::string::npos)
        << message;
  }
}

// Writes dp_tiny_cnn.pth with its first tensor's storage grown to `size`
// bytes (the tensor still views its start), with our writer.
void write_with_big_storage(const std::string& path, uint64_t size) {
  Checkpoint small = read_checkpoint(k_data + "/dp_tiny_cnn.pth");
  Storage& storage = *small.tensors.at(0).storage;
  std::vector<uint8_t> bytes(size);
  for (uint64_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  }
  std::copy(storage.bytes.data, storage.bytes.data + storage.bytes.size, bytes.begin());
  storage.numel = static_cast<int64_t>(size / element_size(storage.dtype));
  storage.bytes = {bytes.data(), size};
  storage.file = nullptr;  // the bytes are only in memory now
  storage.has_crc32 = false;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  write_checkpoint(encode_pickle(small.graph.root), fd, path);
  ::close(fd);
}

constexpr uint64_t k_big = 5 << 20;  // past 1 MiB: read in two halves
constexpr uint64_t k_damage_at = 3'500'000;  // in the second half

// Where verification says a storage differs: the number after "near byte ".
uint64_t near_byte(const std::string& message) {
  size_t at = message.find("near byte ");
  EXPECT_NE(at, std::string::npos) << message;
  return at == std::string::npos ? UINT64_MAX : std::stoull(message.substr(at + 10));
}

TEST(Verify, BigStoragesPassWithAndWithoutAnInputCrc) {
  ScratchFile big("big.pth");
  write_with_big_storage(big.path(), k_big);
  ScratchFile out("out.pth");
  Checkpoint input = write_copy(big.path(), out.path());
  ASSERT_EQ(input.tensors.at(0).storage->bytes.size, k_big);
  VerifyReport report = verify(input, out.path());
  EXPECT_GE(report.bytes, k_big);
  // As for a legacy input: compared with the input's bytes, the output's
  // CRC-32 summed on the way.
  for (Storage& storage : input.graph.storages()) {
    storage.has_crc32 = false;
  }
  report = verify(input, out.path());
  EXPECT_GE(report.bytes, k_big);
}

TEST(Verify, ADamagedBigOutputFailsNearTheDamage) {
  for (bool input_crc : {true, false}) {
    ScratchFile big("big.pth");
    write_with_big_storage(big.path(), k_big);
    ScratchFile out("out.pth");
    Checkpoint input = write_copy(big.path(), out.path());
    for (Storage& storage : input.graph.storages()) {
      storage.has_crc32 = storage.has_crc32 && input_crc;
    }
    flip_byte(out.path(), first_storage_offset(out.path()) + k_damage_at);
    auto [status, message] = failure_of(input, out.path());
    EXPECT_EQ(status, ExitStatus::k_verify_failed) << message;
    EXPECT_NE(message.find("data/0 differs from its source"), std::string::npos) << message;
    // Named by the start of the megabyte read that holds it.
    EXPECT_LE(near_byte(message), k_damage_at) << message;
    EXPECT_GT(near_byte(message) + (1 << 20), k_damage_at) << message;
  }
}

TEST(Verify, ADamagedZipInputIsBlamedOnTheInputRecord) {
  for (uint64_t big : {uint64_t{0}, k_big}) {
    ScratchFile damaged("damaged.pth");
    if (big == 0) {
      spit(damaged.path(), slurp(k_data + "/dp_tiny_cnn.pth"));
    } else {
      write_with_big_storage(damaged.path(), big);
    }
    flip_byte(damaged.path(), first_storage_offset(damaged.path()) + (big == 0 ? 3 : k_damage_at));
    ScratchFile out("out.pth");
    Checkpoint input = write_copy(damaged.path(), out.path());
    auto [status, message] = failure_of(input, out.path());
    EXPECT_EQ(status, ExitStatus::k_bad_input) << message;
    EXPECT_NE(message.find(damaged.path() + ":archive/data/"), std::string::npos) << message;
    EXPECT_NE(message.find("CRC-32 mismatch"), std::string::npos) << message;
  }
}

// `input` (a zip) read back with its float32 storages retyped to bfloat16,
// as `--dtype bf16` retypes them, and the casts that makes.
struct CastInput {
  Checkpoint checkpoint;
  StorageCasts casts;
};

CastInput read_for_bf16(const std::string& input) {
  CastInput in{read_checkpoint(input), {}};
  for (Storage& storage : in.checkpoint.graph.storages()) {
    if (storage.dtype == Dtype::k_float32) {
      in.casts.emplace(&storage, storage.dtype);
      storage.dtype = Dtype::k_bfloat16;
      storage.type = in.checkpoint.graph.make_global(
          "torch", std::string(storage_class_name(Dtype::k_bfloat16)));
    }
  }
  return in;
}

void write_cast(const CastInput& in, const std::string& output, CastCheck* check) {
  int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  write_checkpoint(encode_pickle(in.checkpoint.graph.root), fd, output, {}, in.casts, nullptr,
                   check);
  ::close(fd);
}

std::pair<ExitStatus, std::string> cast_failure_of(const CastInput& in, const std::string& output,
                                                   const CastCheck* checked) {
  VerifySource source{in.checkpoint.path, in.checkpoint.path + ":archive/data/"};
  source.checked = checked;
  try {
    verify_output(in.checkpoint.tensors, encode_pickle(in.checkpoint.graph.root).bytes, output,
                  output, "cpu", source, {}, in.casts);
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  return {ExitStatus::k_ok, ""};
}

// A cast checked by the reference as it was written (CastCheck), from a
// source whose CRC-32 the writer summed: verification rereads the output
// alone, and still finds a damaged byte of it. Big enough for two halves.
TEST(Verify, ACastCheckedAsWrittenIsProvedByItsOutputAndStillCaughtDamaged) {
  ScratchFile big("big.pth");
  write_with_big_storage(big.path(), k_big);
  CastInput in = read_for_bf16(big.path());
  ASSERT_FALSE(in.casts.empty());
  ScratchFile out("out.pth");
  CastCheck check = reference_cast_check();
  write_cast(in, out.path(), &check);
  ASSERT_EQ(check.source_crc32s.size(), in.casts.size());
  for (const auto& [storage, crc] : check.source_crc32s) {
    EXPECT_EQ(crc, storage->crc32) << storage->key;  // the source as read: its record's CRC-32
  }
  EXPECT_EQ(cast_failure_of(in, out.path(), &check).first, ExitStatus::k_ok);
  flip_byte(out.path(), first_storage_offset(out.path()) + k_damage_at / 2);
  auto [status, message] = cast_failure_of(in, out.path(), &check);
  EXPECT_EQ(status, ExitStatus::k_verify_failed) << message;
  EXPECT_NE(message.find("data/0 is not its source cast to bfloat16"), std::string::npos)
      << message;
}

size_t always_differs(Dtype, Dtype, const uint8_t*, const uint8_t*, size_t) { return 0; }

TEST(Verify, AWriterWhoseCastTheReferenceRefusesStopsAsAFailedVerification) {
  CastInput in = read_for_bf16(k_data + "/dp_tiny_cnn.pth");
  ScratchFile out("out.pth");
  CastCheck check;
  check.differs = always_differs;
  try {
    write_cast(in, out.path(), &check);
    FAIL() << "a cast the reference disagrees with was written";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_verify_failed) << e.what();
    EXPECT_NE(std::string(e.what()).find("is not its source cast to bfloat16 at element 0"),
              std::string::npos)
        << e.what();
  }
}

TEST(Verify, ADamagedSourceOfACheckedCastIsBlamedOnTheInputRecord) {
  ScratchFile damaged("damaged.pth");
  spit(damaged.path(), slurp(k_data + "/dp_tiny_cnn.pth"));
  flip_byte(damaged.path(), first_storage_offset(damaged.path()) + 3);
  CastInput in = read_for_bf16(damaged.path());
  ScratchFile out("out.pth");
  CastCheck check = reference_cast_check();
  write_cast(in, out.path(), &check);
  auto [status, message] = cast_failure_of(in, out.path(), &check);
  EXPECT_EQ(status, ExitStatus::k_bad_input) << message;
  EXPECT_NE(message.find(damaged.path() + ":archive/data/"), std::string::npos) << message;
  EXPECT_NE(message.find("CRC-32 mismatch"), std::string::npos) << message;
}

// Verification with the output reread behind the writer (RereadBehind): a
// storage whose exact range it summed is taken from that sum when the sum is
// the one the record must have, and read again otherwise.
TEST(Verify, AStorageRereadBehindTheWriterIsTakenFromTheRereadOnlyWhenItsSumHolds) {
  if (std::thread::hardware_concurrency() < 2) {
    GTEST_SKIP() << "one core: nothing is reread behind the writer";
  }
  ScratchFile big("big.pth");
  write_with_big_storage(big.path(), k_big);
  ScratchFile out("out.pth");
  Checkpoint input = read_checkpoint(big.path());
  {
    int fd = ::open(out.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    RereadBehind reread(out.path());  // the file must exist
    write_checkpoint(encode_pickle(input.graph.root), fd, out.path(), {}, {}, nullptr, nullptr,
                     &reread);
    ::close(fd);
    reread.wait();
    uint64_t data = first_storage_offset(out.path());
    ASSERT_TRUE(reread.crc32(data, k_big).has_value()) << "the writer announced the record";
    // Damage after the reread is not seen: the writer never writes an
    // announced range again, so its sum stands for the bytes.
    flip_byte(out.path(), data + k_damage_at);
    VerifySource source{input.path, input.path + ":archive/data/"};
    source.reread = &reread;
    EXPECT_NO_THROW(verify_output(input.tensors, encode_pickle(input.graph.root).bytes,
                                  out.path(), out.path(), "cpu", source));
    // Without it the same file fails, so the sum was what passed it.
    EXPECT_EQ(failure_of(input, out.path()).first, ExitStatus::k_verify_failed);
  }
  // A sum that is not the record's is not believed: the bytes are read again
  // and an intact output passes (a damaged twin was what was reread).
  ScratchFile good("good.pth");
  write_copy(big.path(), good.path());
  ScratchFile twin("twin.pth");
  spit(twin.path(), slurp(good.path()));
  uint64_t data = first_storage_offset(twin.path());
  flip_byte(twin.path(), data + k_damage_at);
  RereadBehind reread(twin.path());
  reread.finished(data, k_big);
  reread.wait();
  ASSERT_TRUE(reread.crc32(data, k_big).has_value());
  VerifySource source{input.path, input.path + ":archive/data/"};
  source.reread = &reread;
  VerifyReport report = verify_output(input.tensors, encode_pickle(input.graph.root).bytes,
                                      good.path(), good.path(), "cpu", source);
  EXPECT_GE(report.bytes, k_big);
}

TEST(Verify, AnInputTruncatedBeforeTheComparisonIsBlamedOnTheInput) {
  ScratchFile big("big.pth");
  write_with_big_storage(big.path(), k_big);
  ScratchFile out("out.pth");
  Checkpoint input = write_copy(big.path(), out.path());
  for (Storage& storage : input.graph.storages()) {
    storage.has_crc32 = false;  // compared with the input, as a legacy one
  }
  ASSERT_EQ(::truncate(big.path().c_str(), static_cast<off_t>(first_storage_offset(big.path()) +
                                                              k_damage_at)), 0);
  auto [status, message] = failure_of(input, out.path());
  EXPECT_EQ(status, ExitStatus::k_bad_input) << message;
  EXPECT_NE(message.find(big.path() + ": the file was truncated while being read"),
            std::string::npos) << message;
}

}  // namespace
}  // namespace ckpt::test
