// copy_at: file to file inside the kernel when the two positions share their
// offset within a page, through a 1 MiB buffer when they do not; the same
// bytes every way, and a short count when the source ends or the write fails;
// all of it also with the buffer copy in two halves on two threads
// (CopyThreads::two), which must leave the file position where one would.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>

#include "ckpt/mapped_file.h"
#include "test_util.h"

namespace ckpt {

// How gtest names the parameter in the test list.
void PrintTo(CopyThreads threads, std::ostream* os) {
  *os << (threads == CopyThreads::one ? "one thread" : "two threads");
}

namespace test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// 9.5 MiB of bytes that differ from their neighbours and from a shifted copy,
// across many fills of the buffer.
std::string pattern() {
  std::string out((19u << 20) / 2, '\0');
  uint32_t x = 12345;
  for (char& c : out) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

class CopyAtTest : public ::testing::TestWithParam<CopyThreads> {
protected:
  void SetUp() override {
    put(m_scratch / "in.bin", m_source);
    m_in = ::open((m_scratch / "in.bin").c_str(), O_RDONLY);
    ASSERT_GE(m_in, 0);
  }
  void TearDown() override { ::close(m_in); }

  // Writes `lead` bytes, then copies `size` bytes from `offset` of the source;
  // returns what copy_at returned and leaves the file in out.bin. The file
  // position must be right after what was copied, where the caller goes on.
  uint64_t copy_after(uint64_t lead, uint64_t offset, uint64_t size) {
    int out = ::open((m_scratch / "out.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(out, 0);
    write_all(out, std::string(lead, 'x').data(), lead, "out.bin");
    uint64_t copied = copy_at(m_in, offset, out, size, GetParam());
    EXPECT_EQ(::lseek(out, 0, SEEK_CUR), static_cast<off_t>(lead + copied))
        << lead << " " << offset << " " << size;
    ::close(out);
    return copied;
  }

  Scratch m_scratch;
  std::string m_source = pattern();
  int m_in = -1;
};

TEST_P(CopyAtTest, CopiesTheSameBytesAlignedOrNot) {
  // (lead, offset, size): the same offset within a page (the kernel
  // copies), and several that differ (the buffer copies, across its 1 MiB
  // boundaries, whole fills or not, a last fill short).
  const uint64_t all = m_source.size();
  const struct {
    uint64_t lead, offset, size;
  } cases[] = {{0, 0, all},           {4096, 8192, all - 8192},   {100, 4196, all - 4196},
               {0, 64, 3 << 20},      {100, 0, (3 << 20) + 5},    {4095, 1, 2 << 20},
               {17, 3 << 20, 1 << 20}, {0, 64, all - 64},         {100, 0, all},
               {4095, 1, 4 << 20},    {17, 3 << 20, all - (3 << 20)}};
  for (auto [lead, offset, size] : cases) {
    EXPECT_EQ(copy_after(lead, offset, size), size) << lead << " " << offset << " " << size;
    std::string written = slurp(m_scratch / "out.bin");
    ASSERT_EQ(written.size(), lead + size) << lead << " " << offset << " " << size;
    // A boolean: a failing EXPECT_EQ would print megabytes.
    EXPECT_TRUE(written.substr(lead) == m_source.substr(offset, size))
        << lead << " " << offset << " " << size;
  }
}

TEST_P(CopyAtTest, StopsWhereTheSourceEnds) {
  // 200 KiB left of a 1 MiB copy; 5 MiB + 100 bytes left of an 8 MiB one
  // (the source ends inside a fill of the buffer).
  for (auto [left, size] : {std::pair<uint64_t, uint64_t>{200 << 10, 1 << 20},
                            std::pair<uint64_t, uint64_t>{(5 << 20) + 100, 8 << 20}}) {
    for (uint64_t lead : {0u, 100u}) {
      uint64_t offset = m_source.size() - left;
      EXPECT_EQ(copy_after(lead, offset, size), left) << lead << " " << size;
      EXPECT_TRUE(slurp(m_scratch / "out.bin").substr(lead) == m_source.substr(offset))
          << lead << " " << size;
    }
  }
}

TEST_P(CopyAtTest, StopsWhereAWriteFails) {
  // The file size limit makes writes past 6 MiB fail (EFBIG, SIGXFSZ
  // ignored): the copy stops there and says how far it got.
  struct rlimit before {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &before), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limited = before;
  limited.rlim_cur = 6 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  uint64_t copied = copy_after(100, 0, m_source.size());
  ::setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(copied, (6u << 20) - 100);
  EXPECT_TRUE(slurp(m_scratch / "out.bin").substr(100) == m_source.substr(0, copied));
}

TEST_P(CopyAtTest, CopiesNothingToAFileItCannotWrite) {
  put(m_scratch / "read_only.bin", std::string(100, 'x'));
  int out = ::open((m_scratch / "read_only.bin").c_str(), O_RDONLY);
  ASSERT_GE(out, 0);
  for (off_t position : {0, 100}) {
    ASSERT_EQ(::lseek(out, position, SEEK_SET), position);
    EXPECT_EQ(copy_at(m_in, 0, out, 1 << 20, GetParam()), 0u) << position;
    EXPECT_EQ(copy_at(m_in, 0, out, 8 << 20, GetParam()), 0u) << position;
  }
  ::close(out);
}

INSTANTIATE_TEST_SUITE_P(OneAndTwoThreads, CopyAtTest,
                         ::testing::Values(CopyThreads::one, CopyThreads::two),
                         [](const ::testing::TestParamInfo<CopyThreads>& param) {
                           return param.param == CopyThreads::one ? "OneThread" : "TwoThreads";
                         });

}  // namespace
}  // namespace test
}  // namespace ckpt
