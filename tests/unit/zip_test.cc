// The zip index reader on archives built here byte by byte, so each defect
// stands alone.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ckpt/zip.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

struct FakeEntry {
  std::string name;
  std::string data;
  std::string local_name;  // defaults to name
  uint16_t flags = 0;
};

void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out += static_cast<char>((value >> (8 * i)) & 0xff);
  }
}

// A stored zip archive, as simple as zip allows.
std::string make_zip(const std::vector<FakeEntry>& entries) {
  std::string out;
  std::vector<uint64_t> offsets;
  for (const FakeEntry& e : entries) {
    const std::string& local_name = e.local_name.empty() ? e.name : e.local_name;
    offsets.push_back(out.size());
    put(out, 0x04034b50, 4);
    put(out, 20, 2);
    put(out, e.flags, 2);
    put(out, 0, 2);  // stored
    put(out, 0, 4);  // time, date
    put(out, crc32_of(span_of(e.data)), 4);
    put(out, e.data.size(), 4);
    put(out, e.data.size(), 4);
    put(out, local_name.size(), 2);
    put(out, 0, 2);
    out += local_name + e.data;
  }
  uint64_t directory = out.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    const FakeEntry& e = entries[i];
    put(out, 0x02014b50, 4);
    put(out, 20, 2);
    put(out, 20, 2);
    put(out, e.flags, 2);
    put(out, 0, 2);
    put(out, 0, 4);
    put(out, crc32_of(span_of(e.data)), 4);
    put(out, e.data.size(), 4);
    put(out, e.data.size(), 4);
    put(out, e.name.size(), 2);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, 0, 4);
    put(out, offsets[i], 4);
    out += e.name;
  }
  uint64_t directory_size = out.size() - directory;
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, entries.size(), 2);
  put(out, entries.size(), 2);
  put(out, directory_size, 4);
  put(out, directory, 4);
  put(out, 0, 2);
  return out;
}

std::string index_error(const std::string& zip) {
  return format_error_of([&] { read_zip_index(span_of(zip)); });
}

TEST(ZipIndex, ReadsNamesOffsetsAndSizes) {
  std::string zip = make_zip({{"a/data.pkl", "hello", "", 0}, {"a/data/0", "0123456789", "", 0}});
  std::vector<ZipEntry> entries = read_zip_index(span_of(zip));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "a/data.pkl");
  EXPECT_EQ(zip.substr(entries[0].data_offset, entries[0].size), "hello");
  EXPECT_EQ(zip.substr(entries[1].data_offset, entries[1].size), "0123456789");
  EXPECT_EQ(entries[1].crc32, crc32_of(span_of(std::string("0123456789"))));
}

TEST(ZipIndex, RefusesDuplicateNames) {
  EXPECT_EQ(index_error(make_zip({{"a/x", "1", "", 0}, {"a/x", "2", "", 0}})),
            "zip archive has two records named 'a/x'");
}

TEST(ZipIndex, RefusesALocalHeaderThatDisagrees) {
  EXPECT_EQ(index_error(make_zip({{"a/data.pkl", "1", "a/other.pk", 0}})),
            "zip record 'a/data.pkl': local header disagrees with the central directory (name "
            "'a/other.pk', method 0, flags 0)");
}

TEST(ZipIndex, RefusesEncryptedRecords) {
  EXPECT_EQ(index_error(make_zip({{"a/x", "1", "", 1}})), "zip record 'a/x' is marked encrypted");
}

TEST(ZipIndex, ReportsTruncation) {
  std::string zip = make_zip({{"a/x", "payload", "", 0}});
  EXPECT_EQ(index_error(zip.substr(0, zip.size() - 1)),
            "zip archive is truncated: no end-of-central-directory record");
  EXPECT_EQ(index_error(zip.substr(0, 10)), "zip archive is truncated: shorter than its end record");
}

TEST(ZipIndex, RefusesADirectoryThatClaimsTooManyEntries) {
  std::string zip = make_zip({{"a/x", "payload", "", 0}});
  zip[zip.size() - 12] = '\x50';  // total entries: 0x50 in a 49-byte directory
  EXPECT_EQ(index_error(zip), "zip central directory claims 80 entries in 49 bytes");
}

}  // namespace
}  // namespace ckpt::test
