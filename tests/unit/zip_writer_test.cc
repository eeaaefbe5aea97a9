// The zip writer's records made a buffer at a time: from 1 MiB on, two
// threads make, sum and write the two halves at once (pwrite), so each byte
// must land where a single pass would put it, with the CRC-32 of the whole.
// That the layout is PyTorchStreamWriter's is tests/unit_torch's business.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ckpt/crc32.h"
#include "ckpt/reread_behind.h"
#include "ckpt/zip.h"
#include "ckpt/zip_writer.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

// 9 MiB and 3 bytes of a pattern with no period a misplaced half could hide in.
std::string pattern_bytes() {
  std::string bytes(9 * (1 << 20) + 3, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (char& c : bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return bytes;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An archive of a small record, `source` (a file) as one record read and
// summed by the writer, and a record after it, written to `fd`.
void write_archive(int fd, const std::string& out_name, int source_fd, uint64_t size) {
  ZipWriter zip(fd, out_name);
  zip.add("before", span_of(std::string("small")));
  zip.add_from_file("big", source_fd, 0, size, std::nullopt);
  zip.add("after", span_of(std::string("tail")));
  zip.finish();
}

// What joins the two halves' sums: the CRC-32 of the bytes end to end.
TEST(ZipWriter, Crc32CombineJoinsTwoRunsAndKeepsTheFirstAfterAnEmptyOne) {
  std::string bytes = pattern_bytes().substr(0, 100000);
  uint32_t whole = crc32_update(0, bytes.data(), bytes.size());
  for (size_t cut : {size_t{0}, size_t{1}, size_t{4095}, size_t{50000}, bytes.size()}) {
    uint32_t first = crc32_update(0, bytes.data(), cut);
    uint32_t second = crc32_update(0, bytes.data() + cut, bytes.size() - cut);
    EXPECT_EQ(crc32_combine(first, second, bytes.size() - cut), whole) << cut;
  }
  EXPECT_EQ(crc32_combine(0x12345678u, 0, 0), 0x12345678u);
}

TEST(ZipWriter, ARecordWrittenInTwoHalvesHoldsItsBytesAndTheirCrc) {
  Scratch dir;
  std::string bytes = pattern_bytes();
  put(dir / "source", bytes);
  int source = ::open((dir / "source").c_str(), O_RDONLY);
  ASSERT_GE(source, 0);
  int out = ::open((dir / "out.zip").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(out, 0);
  write_archive(out, dir / "out.zip", source, bytes.size());
  ::close(out);

  std::string zip = read_all(dir / "out.zip");
  std::vector<ZipEntry> entries = read_zip_index(span_of(zip));
  ASSERT_EQ(entries.size(), 4u);  // and "version"
  EXPECT_EQ(entries[1].name, "archive/big");
  ASSERT_EQ(entries[1].size, bytes.size());
  EXPECT_TRUE(zip.compare(entries[1].data_offset, bytes.size(), bytes) == 0);
  EXPECT_EQ(entries[1].crc32, crc32_of(span_of(bytes)));
  EXPECT_EQ(zip.substr(entries[2].data_offset, entries[2].size), "tail");

  // Into a pipe the halves go one after the other: the same archive.
  int ends[2];
  ASSERT_EQ(::pipe(ends), 0);
  std::string piped;
  std::thread drain([&] {
    char buffer[1 << 16];
    ssize_t n;
    while ((n = ::read(ends[0], buffer, sizeof buffer)) > 0) {
      piped.append(buffer, static_cast<size_t>(n));
    }
  });
  write_archive(ends[1], "pipe", source, bytes.size());
  ::close(ends[1]);
  drain.join();
  ::close(ends[0]);
  ::close(source);
  EXPECT_TRUE(piped == zip);
}

TEST(ZipWriter, FilledRecordsAskForWholeElementsCoveringEveryByteOnce) {
  Scratch dir;
  int out = ::open((dir / "out.zip").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(out, 0);
  // 873,817 elements of 6 bytes: half the bytes is no whole element.
  const uint64_t grain = 6;
  const uint64_t size = grain * 873817;
  std::mutex asked_lock;
  std::vector<std::pair<uint64_t, uint64_t>> asked;
  {
    ZipWriter zip(out, dir / "out.zip");
    zip.add_filled("cast", size, grain,
                   [&](uint64_t at, uint8_t* to, uint64_t n,
                       std::vector<uint8_t>&) -> std::optional<uint32_t> {
                     for (uint64_t i = 0; i < n; ++i) {
                       to[i] = static_cast<uint8_t>((at + i) % 251);
                     }
                     std::lock_guard<std::mutex> hold(asked_lock);
                     asked.emplace_back(at, n);
                     return std::nullopt;
                   });
    zip.finish();
  }
  ::close(out);
  std::sort(asked.begin(), asked.end());
  uint64_t covered = 0;
  for (const auto& [at, n] : asked) {
    EXPECT_EQ(at, covered);
    EXPECT_EQ(at % grain, 0u);
    EXPECT_EQ(n % grain, 0u);
    covered = at + n;
  }
  EXPECT_EQ(covered, size);
  if (std::thread::hardware_concurrency() >= 2) {  // the second half began on a whole element
    uint64_t half = size / 2 / grain * grain;
    EXPECT_TRUE(std::find_if(asked.begin(), asked.end(),
                             [&](const auto& a) { return a.first == half; }) != asked.end());
  }

  std::string zip = read_all(dir / "out.zip");
  std::vector<ZipEntry> entries = read_zip_index(span_of(zip));
  ASSERT_EQ(entries[0].size, size);
  std::string expected(size, '\0');
  for (uint64_t i = 0; i < size; ++i) {
    expected[i] = static_cast<char>(i % 251);
  }
  EXPECT_TRUE(zip.compare(entries[0].data_offset, size, expected) == 0);
  EXPECT_EQ(entries[0].crc32, crc32_of(span_of(expected)));
}

// With a RereadBehind, each record of 64 KiB or more is announced once
// written, at its place in the file: the archive may start past the file's
// start, and both ways of writing a record (copied with its CRC-32 known, or
// made and summed) announce it.
TEST(ZipWriter, AnnouncesEachLargeRecordWhereItLiesInTheFile) {
  if (std::thread::hardware_concurrency() < 2) {
    GTEST_SKIP() << "one core: nothing is reread behind the writer";
  }
  Scratch dir;
  std::string bytes = pattern_bytes();
  put(dir / "in.bin", bytes);
  int source = ::open((dir / "in.bin").c_str(), O_RDONLY);
  ASSERT_GE(source, 0);
  std::string out = dir / "out.zip";
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "0123456789", 10), 10);  // the archive starts at byte 10
  const uint32_t crc = crc32_update(0, bytes.data(), bytes.size());
  RereadBehind reread(out);
  {
    ZipWriter zip(fd, out, "archive", &reread);
    zip.add_from_file("copied", source, 0, bytes.size(), crc);
    zip.add_from_file("summed", source, 0, bytes.size(), std::nullopt);
    zip.finish();
  }
  ::close(fd);
  ::close(source);
  reread.wait();
  std::string file = read_all(out);
  size_t first = file.find(bytes.substr(0, 64));
  ASSERT_NE(first, std::string::npos);
  size_t second = file.find(bytes.substr(0, 64), first + bytes.size());
  ASSERT_NE(second, std::string::npos);
  EXPECT_EQ(reread.crc32(first, bytes.size()), crc);
  EXPECT_EQ(reread.crc32(second, bytes.size()), crc);
}

}  // namespace
}  // namespace ckpt::test
