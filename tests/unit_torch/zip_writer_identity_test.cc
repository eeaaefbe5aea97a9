// Our ZipWriter against LibTorch's own PyTorchStreamWriter: for the same
// records both must write the same bytes. This is the one test that links
// LibTorch, since it is the judge here.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ckpt/crc32.h"
#include "ckpt/zip_writer.h"

namespace ckpt {
namespace {

struct Record {
  std::string name;
  std::string data;
};

std::string torch_archive(const std::vector<Record>& records) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
    out.append(static_cast<const char*>(data), size);
    return size;
  });
  for (const Record& r : records) {
    writer.writeRecord(r.name, r.data.data(), r.data.size());
  }
  writer.writeEndOfFile();
  return out;
}

// Writes `records` with ZipWriter, memory records and file-backed ones
// alternating (with and without a known CRC-32), and returns the file.
std::string our_archive(const std::vector<Record>& records) {
  FILE* source = std::tmpfile();
  FILE* target = std::tmpfile();
  std::string all;
  for (const Record& r : records) {
    all += r.data;
  }
  std::fwrite(all.data(), 1, all.size(), source);
  std::fflush(source);
  ZipWriter zip(fileno(target), "test");
  uint64_t offset = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    ByteSpan span{reinterpret_cast<const uint8_t*>(r.data.data()), r.data.size()};
    if (i % 3 == 0) {
      zip.add(r.name, span);
    } else {
      std::optional<uint32_t> crc;
      if (i % 3 == 1) {
        crc = crc32_update(0, r.data.data(), r.data.size());
      }
      zip.add_from_file(r.name, fileno(source), offset, r.data.size(), crc);
    }
    offset += r.data.size();
  }
  uint64_t size = zip.finish();
  std::string out(size, '\0');
  EXPECT_EQ(::pread(fileno(target), out.data(), size, 0), static_cast<ssize_t>(size));
  std::fclose(source);
  std::fclose(target);
  return out;
}

TEST(ZipWriterIdentity, MatchesPyTorchStreamWriterForATorchSaveLayout) {
  std::vector<Record> records = {{"data.pkl", std::string("\x80\x02}q\x00.", 6)},
                                 {"byteorder", "little"}};
  for (int i = 0; i < 12; ++i) {
    records.push_back({"data/" + std::to_string(i), std::string(static_cast<size_t>(i * 37), 'a' + i)});
  }
  EXPECT_EQ(our_archive(records), torch_archive(records));
}

TEST(ZipWriterIdentity, MatchesForEveryPaddingAndEmptyRecords) {
  std::mt19937 rng(7);
  std::vector<Record> records;
  for (int i = 0; i < 130; ++i) {
    std::string data(static_cast<size_t>(i), '\0');
    for (char& c : data) {
      c = static_cast<char>(rng());
    }
    std::string name = "r" + std::string(static_cast<size_t>(rng() % 40), 'n') + std::to_string(i);
    records.push_back({name, data});
  }
  EXPECT_EQ(our_archive(records), torch_archive(records));
}

TEST(ZipWriterIdentity, MatchesForALargerRecord) {
  std::vector<Record> records = {{"data.pkl", "x"}, {"data/0", std::string(3 << 20, '\x5a')}};
  records[1].data[12345] = 1;
  EXPECT_EQ(our_archive(records), torch_archive(records));
}

}  // namespace
}  // namespace ckpt
