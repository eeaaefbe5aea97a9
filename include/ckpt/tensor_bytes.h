// A tensor's elements as one row-major byte stream, as a format without
// strides (safetensors) stores them: read in bounded chunks from wherever the
// storage's bytes lie, so that a transposed or sliced tensor of any size is
// written contiguous through a small buffer.
#pragma once

#include <cstdint>

#include "ckpt/storage_pieces.h"
#include "ckpt/tensor.h"

namespace ckpt {

class TensorBytes {
public:
  // `tensor` must outlive this reader, and its sizes and strides be checked
  // against its storage (as `as_tensor` does).
  explicit TensorBytes(const TensorRef& tensor);

  // numel × element size: the bytes the stream holds.
  uint64_t size() const { return m_size; }
  // True when the stream is one range of the storage's bytes
  // ([`storage_start()`, + `size()`)), which can be copied as it lies.
  bool is_one_range() const { return m_one_range; }
  uint64_t storage_start() const { return m_start; }

  // Copies the next bytes of the stream into `to`, at most `capacity` of them
  // and whole elements only (`capacity` must hold one). Returns how many; 0
  // once the stream is done. One range of a file is read with pread, a
  // strided tensor from the map. Throws `Error` when the file cannot be read
  // or was truncated meanwhile.
  uint64_t read(uint8_t* to, uint64_t capacity);

  // From now on, notes each run read from a file in `log` with its CRC-32
  // (storage_pieces.h's ReadPart), for check_piece_sources; a strided walk
  // notes nothing.
  void log_reads(ReadLog* log) { m_log = log; }

private:
  const TensorRef& m_tensor;
  uint64_t m_size = 0;
  uint64_t m_element = 0;  // bytes per element
  uint64_t m_start = 0;    // the first element's byte offset in the storage
  bool m_one_range = false;
  uint64_t m_done = 0;     // bytes of the stream already read
  // For a strided walk: the index of the next element, its byte offset, and
  // how many elements the innermost dimension copies at once.
  Dims m_index;
  uint64_t m_position = 0;
  uint64_t m_run = 1;
  ReadLog* m_log = nullptr;
};

}  // namespace ckpt
