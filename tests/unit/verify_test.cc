// Verification of a written checkpoint: it passes on a faithful copy, and a
// damaged byte is blamed on the right file (the output: exit 3; the input,
// whose record CRC-32 no longer matches: exit 1), for zip and legacy inputs.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "ckpt/checkpoint.h"
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
  write_checkpoint(encoded, in.file.fd(), fd, output);
  ::close(fd);
  return in;
}

VerifyReport verify(const Checkpoint& input, const std::string& output) {
  return verify_output(input.tensors, encode_pickle(input.graph.root).bytes, output, output, "cpu",
                       input.path + ":archive/data/");
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

TEST(Verify, ADamagedZipInputIsBlamedOnTheInputRecord) {
  ScratchFile damaged("damaged.pth");
  spit(damaged.path(), slurp(k_data + "/dp_tiny_cnn.pth"));
  flip_byte(damaged.path(), first_storage_offset(damaged.path()) + 3);
  ScratchFile out("out.pth");
  Checkpoint input = write_copy(damaged.path(), out.path());
  auto [status, message] = failure_of(input, out.path());
  EXPECT_EQ(status, ExitStatus::k_bad_input) << message;
  EXPECT_NE(message.find(damaged.path() + ":archive/data/"), std::string::npos) << message;
  EXPECT_NE(message.find("CRC-32 mismatch"), std::string::npos) << message;
}

}  // namespace
}  // namespace ckpt::test
