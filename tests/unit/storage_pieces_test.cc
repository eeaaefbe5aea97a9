// Storages made of pieces of several files (storage_pieces.h): built, read
// across piece boundaries, copied in the kernel, written into a torch zip by
// the writer and proved by verification, which blames a damaged piece, or,
// given what the writer read (ReadLog), by rereading the output alone.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include "ckpt/checkpoint.h"
#include "ckpt/mapped_file.h"
#include "ckpt/pickle.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"
#include "ckpt/tensor_bytes.h"
#include "ckpt/verify.h"
#include "ckpt/writer.h"
#include "ckpt/zip.h"
#include "test_util.h"

namespace ckpt::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `count` bytes counting up from `first` (wrapping at 256).
std::string ramp(size_t count, unsigned first) {
  std::string out(count, '\0');
  for (size_t i = 0; i < count; ++i) {
    out[i] = static_cast<char>((first + i) & 0xff);
  }
  return out;
}

// Two "rank files" and a float32 storage of 6 + 10 elements: elements 0..5
// from bytes 8.. of file a, 6..15 from bytes 100.. of file b (the layout of a
// parameter cut across two ZeRO partitions).
class PiecesTest : public ::testing::Test {
protected:
  void SetUp() override {
    put(m_scratch / "a.bin", ramp(200, 0));
    put(m_scratch / "b.bin", ramp(300, 50));
    m_files.push_back(MappedFile::open(m_scratch / "a.bin"));
    m_files.push_back(MappedFile::open(m_scratch / "b.bin"));
    m_storage = make_tensor_storage(m_graph, Dtype::k_float32, 16, "layer.weight");
    append_piece(*m_storage, m_files[0], 8, 24);
    append_piece(*m_storage, m_files[1], 100, 40);
    finish_pieces(*m_storage);
    m_expected = slurp(m_scratch / "a.bin").substr(8, 24) + slurp(m_scratch / "b.bin").substr(100, 40);
  }

  // A state dict of layer.weight (4 × 4) over the storage, written by the
  // writer to out.pth (noting its reads in `read` when given).
  struct Written {
    std::vector<TensorRef> tensors;
    EncodedPickle encoded;
    std::string path;
  };
  Written write_state_dict(ReadLog* read = nullptr) {
    Node* root = make_state_dict(
        m_graph, {{"layer.weight", make_tensor(m_graph, m_storage, Dtype::k_float32, {4, 4})}});
    Written written{tensors_reachable(root), encode_pickle(root), m_scratch / "out.pth"};
    int fd = ::open(written.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    write_checkpoint(written.encoded, fd, written.path, {}, {}, read);
    ::close(fd);
    return written;
  }

  Scratch m_scratch;
  std::deque<MappedFile> m_files;
  Graph m_graph;
  Storage* m_storage = nullptr;
  std::string m_expected;
};

TEST_F(PiecesTest, ReadsAcrossPieceBoundaries) {
  ASSERT_EQ(m_storage->pieces.size(), 2u);
  EXPECT_EQ(m_storage->bytes.data, nullptr);
  EXPECT_EQ(m_storage->bytes.size, 64u);
  for (uint64_t offset : {0u, 5u, 20u, 24u, 30u}) {
    for (uint64_t size : {1u, 4u, 10u}) {
      if (offset + size > 64) {
        continue;
      }
      std::string got(size, '\0');
      read_storage_range(*m_storage, offset, reinterpret_cast<uint8_t*>(got.data()), size);
      EXPECT_EQ(got, m_expected.substr(offset, size)) << offset << "+" << size;
    }
  }
  uint8_t byte = 0;
  EXPECT_THROW(read_storage_range(*m_storage, 64, &byte, 1), Error);
}

TEST_F(PiecesTest, AdjacentPiecesMergeAndOnePieceIsAPlainRange) {
  Storage* one = make_tensor_storage(m_graph, Dtype::k_uint8, 30, "one");
  append_piece(*one, m_files[0], 10, 20);
  append_piece(*one, m_files[0], 30, 10);  // follows the first: merged
  append_piece(*one, m_files[1], 0, 0);    // empty: nothing
  finish_pieces(*one);
  EXPECT_TRUE(one->pieces.empty());
  EXPECT_EQ(one->file, &m_files[0]);
  EXPECT_EQ(one->file_offset, 10u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(one->bytes.data), one->bytes.size),
            slurp(m_scratch / "a.bin").substr(10, 30));
}

TEST_F(PiecesTest, PiecesThatDoNotAddUpAreRefusedNamingTheStorage) {
  Storage* short_one = make_tensor_storage(m_graph, Dtype::k_float32, 4, "short.bias");
  append_piece(*short_one, m_files[0], 0, 12);
  try {
    finish_pieces(*short_one);
    FAIL() << "accepted 12 bytes for 4 float32 elements";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("short.bias"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("16"), std::string::npos) << e.what();
  }
}

TEST_F(PiecesTest, CopiesPieceByPieceIntoAFile) {
  int fd = ::open((m_scratch / "out.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(copy_storage_range(*m_storage, 4, 50, fd), 50u);
  ::close(fd);
  EXPECT_EQ(slurp(m_scratch / "out.bin"), m_expected.substr(4, 50));
}

TEST_F(PiecesTest, TensorBytesStreamsAViewOfPieces) {
  // Column 1 of the storage seen as 4 × 4: elements 1, 5, 9, 13.
  Node* node = make_tensor(m_graph, m_storage, Dtype::k_float32, {4, 4});
  TensorRef column = *as_tensor(node);
  column.sizes = {4};
  column.strides = {4};
  column.offset = 1;
  TensorBytes stream(column);
  std::string got(16, '\0');
  EXPECT_EQ(stream.read(reinterpret_cast<uint8_t*>(got.data()), 16), 16u);
  std::string want;
  for (size_t e : {1, 5, 9, 13}) {
    want += m_expected.substr(e * 4, 4);
  }
  EXPECT_EQ(got, want);
}

TEST_F(PiecesTest, WrittenByTheWriterAndProvedByVerification) {
  auto [tensors, encoded, out] = write_state_dict();

  Checkpoint back = read_checkpoint(out);
  ASSERT_EQ(back.tensors.size(), 1u);
  const Storage& written = *back.tensors[0].storage;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(written.bytes.data), written.bytes.size),
            m_expected);
  VerifySource source{m_scratch / "a.bin", ""};
  EXPECT_NO_THROW(verify_output(tensors, encoded.bytes, out, out, "cpu", source));

  // A byte of the second piece changed after writing: the output no longer
  // holds the input's bytes.
  std::string b = slurp(m_scratch / "b.bin");
  b[120] = static_cast<char>(b[120] ^ 0x40);
  std::fstream(m_scratch / "b.bin", std::ios::in | std::ios::out | std::ios::binary) << b;
  try {
    verify_output(tensors, encoded.bytes, out, out, "cpu", source);
    FAIL() << "verification missed a changed piece";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("differs from its source"), std::string::npos)
        << e.what();
  }
}

TEST_F(PiecesTest, ReadLogNotesWhatIsReadWithItsCrc) {
  ReadLog log;
  std::string got(64, '\0');
  read_storage_range(*m_storage, 0, reinterpret_cast<uint8_t*>(got.data()), 64, &log);
  ASSERT_EQ(log.size(), 2u);  // one part per piece
  EXPECT_EQ(log[0].fd, m_files[0].fd());
  EXPECT_EQ(log[0].offset, 8u);
  EXPECT_EQ(log[0].size, 24u);
  EXPECT_EQ(log[0].crc32, crc32_of(span_of(m_expected.substr(0, 24))));
  EXPECT_EQ(log[1].fd, m_files[1].fd());
  EXPECT_EQ(log[1].offset, 100u);
  EXPECT_EQ(log[1].crc32, crc32_of(span_of(m_expected.substr(24, 40))));
}

// A record is proven from the parts already read (any order, overlapping,
// some outside it) and the gaps between them, read now; a part whose CRC-32
// is wrong, or damage in a gap, makes it fail.
TEST_F(PiecesTest, RecordsProvenFromPartsReadAndTheGapsBetween) {
  // Bytes [8, 158) of file a as one record, as a ZeRO partition is to its pieces.
  std::string a = slurp(m_scratch / "a.bin");
  PieceSource record{&m_files[0], "a.bin:archive/data/0", 8, 150, crc32_of(span_of(a.substr(8, 150)))};
  int fd = m_files[0].fd();
  auto part = [&](uint64_t offset, uint64_t size) {
    return ReadPart{fd, offset, size, crc32_of(span_of(a.substr(offset, size)))};
  };
  EXPECT_TRUE(piece_source_intact(record));  // nothing read: all of it now
  ReadLog read = {part(120, 30), part(8, 40), part(30, 20), part(60, 10), part(150, 30),
                  ReadPart{m_files[1].fd(), 8, 40, 0}};
  EXPECT_NO_THROW(check_piece_sources({record}, read));
  ReadLog wrong = read;
  wrong[1].crc32 ^= 1;  // the part at 8
  EXPECT_THROW(check_piece_sources({record}, wrong), Error);
  record.crc32 ^= 1;  // damage anywhere, gaps included
  try {
    check_piece_sources({record}, read);
    ADD_FAILURE() << "a record whose bytes do not match its CRC-32 passed";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "a.bin:archive/data/0: CRC-32 mismatch: the tensor data is "
                                     "corrupt (the file was damaged after it was saved)");
  }
}

TEST_F(PiecesTest, ReadsInsideKeepsThePartsWithinARecordSorted) {
  PieceSource record{&m_files[0], "a.bin:archive/data/0", 8, 150, 0};
  int a = m_files[0].fd();
  int b = m_files[1].fd();
  ReadLog read = {{a, 100, 58, 1}, {a, 8, 10, 2},  {a, 150, 10, 3},  // the last runs past it
                  {a, 0, 8, 4},    {b, 8, 10, 5}};                   // before it; another file
  ReadLog inside = reads_inside(read, {record});
  ASSERT_EQ(inside.size(), 2u);
  EXPECT_EQ(inside[0].crc32, 2u);
  EXPECT_EQ(inside[1].crc32, 1u);
}

// The CRC-32 of a storage's bytes joined from what was read of its pieces,
// in any cut and order, a run read twice included; none when a byte is missing.
TEST_F(PiecesTest, Crc32FromReadsJoinsThePartsThatCoverEveryPiece) {
  uint32_t whole = crc32_of(span_of(m_expected));
  std::string got(64, '\0');
  auto* to = reinterpret_cast<uint8_t*>(got.data());
  ReadLog read;
  read_storage_range(*m_storage, 30, to, 34, &read);
  read_storage_range(*m_storage, 0, to, 30, &read);
  read_storage_range(*m_storage, 0, to, 10, &read);  // the start read again, cut otherwise
  std::sort(read.begin(), read.end(), [](const ReadPart& x, const ReadPart& y) {
    return x.fd != y.fd ? x.fd < y.fd : x.offset < y.offset;
  });
  EXPECT_EQ(crc32_from_reads(*m_storage, read), whole);
  ReadLog gap;
  for (const ReadPart& part : read) {
    if (part.offset != 100) {  // the first bytes of file b's piece
      gap.push_back(part);
    }
  }
  EXPECT_EQ(crc32_from_reads(*m_storage, gap), std::nullopt);
}

// Written with its reads noted, a storage of pieces is proven by rereading
// the output alone: the pieces are not read again (one changed after it was
// read passes: the output holds what its record held), the records are
// proven by the CRC-32s of those reads and of the gaps between them, read
// now (damage there is caught), and a damaged output is still caught.
TEST_F(PiecesTest, WrittenWithItsReadsNotedItIsProvedByTheOutputAlone) {
  ReadLog read;
  auto [tensors, encoded, out] = write_state_dict(&read);
  std::string a = slurp(m_scratch / "a.bin");
  std::string b = slurp(m_scratch / "b.bin");
  std::vector<PieceSource> records = {
      {&m_files[0], "a.bin:archive/data/0", 0, 200, crc32_of(span_of(a))},
      {&m_files[1], "b.bin:archive/data/0", 0, 300, crc32_of(span_of(b))}};
  ReadLog proven = reads_inside(read, records);
  EXPECT_EQ(crc32_from_reads(*m_storage, proven), crc32_of(span_of(m_expected)));
  VerifySource source{m_scratch / "a.bin", ""};
  source.proven = &proven;

  auto damage_b = [&](size_t at) {
    b[at] = static_cast<char>(b[at] ^ 0x40);
    std::fstream(m_scratch / "b.bin", std::ios::in | std::ios::out | std::ios::binary) << b;
  };
  damage_b(120);  // inside the piece [100, 140), after it was read
  EXPECT_NO_THROW(verify_output(tensors, encoded.bytes, out, out, "cpu", source));
  EXPECT_NO_THROW(check_piece_sources(records, proven));
  damage_b(200);  // outside it: read only by the record's check
  EXPECT_THROW(check_piece_sources(records, proven), Error);

  std::string written = slurp(out);
  size_t at = written.find(m_expected.substr(0, 24));
  ASSERT_NE(at, std::string::npos);
  written[at + 5] = static_cast<char>(written[at + 5] ^ 0x01);
  std::ofstream(out, std::ios::binary | std::ios::trunc) << written;
  try {
    verify_output(tensors, encoded.bytes, out, out, "cpu", source);
    FAIL() << "verification missed a damaged output";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), ExitStatus::k_verify_failed) << e.what();
  }
}

TEST_F(PiecesTest, TensorBytesNotesItsReadsAsReadStorageRangeDoes) {
  TensorRef tensor = *as_tensor(make_tensor(m_graph, m_storage, Dtype::k_float32, {16}));
  TensorBytes bytes(tensor);
  ReadLog log;
  bytes.log_reads(&log);
  std::string got(64, '\0');
  ASSERT_EQ(bytes.read(reinterpret_cast<uint8_t*>(got.data()), 64), 64u);
  ReadLog direct;
  read_storage_range(*m_storage, 0, reinterpret_cast<uint8_t*>(got.data()), 64, &direct);
  ASSERT_EQ(log.size(), direct.size());
  for (size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i].fd, direct[i].fd);
    EXPECT_EQ(log[i].offset, direct[i].offset);
    EXPECT_EQ(log[i].size, direct[i].size);
    EXPECT_EQ(log[i].crc32, direct[i].crc32);
  }
}

}  // namespace
}  // namespace ckpt::test
