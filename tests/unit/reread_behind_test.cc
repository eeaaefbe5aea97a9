// RereadBehind: ranges a writer announces are reread from the file on a
// second thread; after wait(), the CRC-32 of a range is known only where
// announced ranges that were all reread tile it exactly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <thread>

#include "ckpt/crc32.h"
#include "ckpt/reread_behind.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

constexpr uint64_t k_mib = uint64_t{1} << 20;

std::string bytes_of(uint64_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed;
  for (char& c : out) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

uint32_t crc_of(const std::string& bytes, uint64_t offset, uint64_t size) {
  return crc32_update(0, bytes.data() + offset, size);
}

void append(int fd, const std::string& bytes, uint64_t offset, uint64_t size) {
  ASSERT_EQ(::write(fd, bytes.data() + offset, size), static_cast<ssize_t>(size));
}

class RereadBehindTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (std::thread::hardware_concurrency() < 2) {
      GTEST_SKIP() << "one core: RereadBehind does nothing, verification rereads";
    }
    m_fd = ::open(m_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(m_fd, 0);
  }
  void TearDown() override {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
  }

  Scratch m_scratch;
  std::string m_path = m_scratch / "out.bin";
  int m_fd = -1;
  // 7 MiB + 5 bytes: ranges that end inside a buffer of the reread.
  std::string m_bytes = bytes_of(7 * k_mib + 5, 7);
};

TEST_F(RereadBehindTest, SumsTheRangesAnnouncedAsTheWriterGoes) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, 100);  // a header: not announced
  append(m_fd, m_bytes, 100, 3 * k_mib);
  reread.finished(100, 3 * k_mib);
  append(m_fd, m_bytes, 100 + 3 * k_mib, m_bytes.size() - 100 - 3 * k_mib);
  reread.finished(100 + 3 * k_mib, m_bytes.size() - 100 - 3 * k_mib);
  reread.wait();
  EXPECT_EQ(reread.crc32(100, 3 * k_mib), crc_of(m_bytes, 100, 3 * k_mib));
  uint64_t rest = m_bytes.size() - 100 - 3 * k_mib;
  EXPECT_EQ(reread.crc32(100 + 3 * k_mib, rest), crc_of(m_bytes, 100 + 3 * k_mib, rest));
  // Two ranges end to end join into the sum of both.
  EXPECT_EQ(reread.crc32(100, m_bytes.size() - 100), crc_of(m_bytes, 100, m_bytes.size() - 100));
}

TEST_F(RereadBehindTest, KnowsOnlyRangesThatAnnouncedOnesTileExactly) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, m_bytes.size());
  reread.finished(0, 2 * k_mib);
  reread.finished(3 * k_mib, k_mib);
  reread.wait();
  EXPECT_EQ(reread.crc32(0, 2 * k_mib), crc_of(m_bytes, 0, 2 * k_mib));
  EXPECT_EQ(reread.crc32(0, k_mib), std::nullopt);          // part of a range
  EXPECT_EQ(reread.crc32(1, 2 * k_mib - 1), std::nullopt);  // another start
  EXPECT_EQ(reread.crc32(0, 4 * k_mib), std::nullopt);      // across a gap
  EXPECT_EQ(reread.crc32(5 * k_mib, k_mib), std::nullopt);  // never announced
}

TEST_F(RereadBehindTest, LeavesSmallRangesAndShortReadsToVerification) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, 2 * k_mib);
  reread.finished(0, RereadBehind::k_min_range - 1);
  reread.finished(k_mib, 2 * k_mib);  // half of it is past the end of the file
  reread.wait();
  EXPECT_EQ(reread.crc32(0, RereadBehind::k_min_range - 1), std::nullopt);
  EXPECT_EQ(reread.crc32(k_mib, 2 * k_mib), std::nullopt);
}

TEST_F(RereadBehindTest, ReadsTheFileAsItIsWhenItRereads) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, 2 * k_mib);
  reread.finished(0, 2 * k_mib);
  reread.wait();
  // Bytes changed after the reread are not seen: verification trusts the
  // writer never to write an announced range again (the writers check their
  // position before announcing).
  ASSERT_EQ(::pwrite(m_fd, "x", 1, 5), 1);
  EXPECT_EQ(reread.crc32(0, 2 * k_mib), crc_of(m_bytes, 0, 2 * k_mib));
}

TEST_F(RereadBehindTest, KnowsNothingUntilWaitedFor) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, k_mib);
  reread.finished(0, k_mib);
  EXPECT_EQ(reread.crc32(0, k_mib), std::nullopt);
  reread.wait();
  reread.wait();  // idempotent
  EXPECT_EQ(reread.crc32(0, k_mib), crc_of(m_bytes, 0, k_mib));
  reread.finished(k_mib, k_mib);  // after wait: ignored, not a hang
  EXPECT_EQ(reread.crc32(k_mib, k_mib), std::nullopt);
}

TEST_F(RereadBehindTest, RereadsWhatWasAnnouncedBeforeItWasClosed) {
  RereadBehind reread(m_path);
  append(m_fd, m_bytes, 0, 2 * k_mib);
  reread.finished(0, k_mib);
  reread.close();
  reread.finished(k_mib, k_mib);  // after close: ignored
  reread.wait();
  EXPECT_EQ(reread.crc32(0, k_mib), crc_of(m_bytes, 0, k_mib));
  EXPECT_EQ(reread.crc32(k_mib, k_mib), std::nullopt);
}

TEST(RereadBehind, AFileItCannotOpenLeavesEverythingToVerification) {
  Scratch scratch;
  RereadBehind reread(scratch / "missing.bin");
  reread.finished(0, k_mib);
  reread.wait();
  EXPECT_EQ(reread.crc32(0, k_mib), std::nullopt);
}

}  // namespace
}  // namespace ckpt::test
