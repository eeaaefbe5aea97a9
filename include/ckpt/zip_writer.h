// A streaming zip writer whose output is byte for byte what LibTorch 1.13's
// PyTorchStreamWriter (miniz) writes for the same records.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/bytes.h"
#include "ckpt/reread_behind.h"

namespace ckpt {

class ZipWriter {
public:
  // Writes to the open file `fd` from its current start; `path` names it in
  // messages; records are named `<archive>/<name>`. With `reread`, the data
  // of each record of 64 KiB or more is announced to it once written.
  ZipWriter(int fd, std::string path, std::string archive = "archive",
            RereadBehind* reread = nullptr);

  // A record from memory, with its CRC-32 when already known.
  void add(const std::string& name, ByteSpan data, std::optional<uint32_t> crc32 = std::nullopt);
  // A record of `size` bytes at `offset` of the open file `source_fd`. With
  // `crc32` known, the bytes are copied inside the kernel (copy_file_range);
  // without, they stream through a buffer while their CRC-32 is computed.
  void add_from_file(const std::string& name, int source_fd, uint64_t offset, uint64_t size,
                     std::optional<uint32_t> crc32);
  // Makes bytes [at, at + n) of a record into `to`; `scratch` is a buffer
  // of its own for each thread that calls it. Returns their CRC-32 when it
  // summed them on the way, else nullopt (then add_filled sums them).
  using FillFn = std::function<std::optional<uint32_t>(uint64_t at, uint8_t* to, uint64_t n,
                                                       std::vector<uint8_t>& scratch)>;
  // A record of `size` bytes made by `fill`, a buffer at a time, with `at`
  // and `n` multiples of `grain` (the element size of a cast). From 1 MiB on
  // the two halves are made and written at once on two threads.
  void add_filled(const std::string& name, uint64_t size, uint64_t grain, const FillFn& fill);
  // The `version` record ("3\n", as torch.save writes), the central
  // directory and the end records. Returns the archive's size.
  uint64_t finish();

  uint64_t written() const { return m_offset; }

private:
  struct Entry {
    std::string name;
    uint64_t offset;  // of the local header
    uint64_t size;
    uint32_t crc32;
    uint64_t data = 0;  // where the data starts in the archive
  };

  void begin_record(const std::string& name, uint64_t size);
  void end_record(uint32_t crc32);
  // Records are small next to a syscall: headers, descriptors and small
  // tensors collect in a buffer, flushed before each large record.
  static constexpr size_t k_buffer_size = size_t{1} << 20;
  void write(const void* data, size_t size);
  void flush();
  void write_through(const void* data, size_t size);
  void write_at(uint64_t position, const uint8_t* data, uint64_t size);
  void read_input(int source_fd, char* to, uint64_t size, uint64_t offset);
  // Announces the current record's data, all written to `m_fd`, to m_reread.
  void announce_data();
  [[noreturn]] void fail(const std::string& what, int error);

  int m_fd;
  RereadBehind* m_reread;
  uint64_t m_start = 0;  // where in the file the archive starts (with m_reread)
  std::string m_path;
  std::string m_prefix;
  uint64_t m_offset = 0;  // bytes written, counting those still in the buffer
  std::string m_buffer;
  std::vector<Entry> m_entries;
};

}  // namespace ckpt
