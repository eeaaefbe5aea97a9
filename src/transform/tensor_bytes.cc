// Walks a strided tensor in row-major order, copying runs of the innermost
// dimension when they are contiguous in the storage.
#include "ckpt/tensor_bytes.h"

#include <algorithm>
#include <cstring>

#include "ckpt/storage_pieces.h"

namespace ckpt {

TensorBytes::TensorBytes(const TensorRef& tensor) : m_tensor(tensor) {
  m_element = static_cast<uint64_t>(element_size(tensor.dtype));
  int64_t numel = tensor.numel();
  m_size = numel > 0 ? static_cast<uint64_t>(numel) * m_element : 0;
  m_start = static_cast<uint64_t>(tensor.offset) * m_element;
  // Row-major contiguous (dimensions of size 1 may have any stride).
  m_one_range = true;
  int64_t expected = 1;
  for (size_t i = tensor.sizes.size(); i-- > 0;) {
    if (tensor.sizes[i] != 1 && tensor.strides[i] != expected) {
      m_one_range = false;
    }
    expected *= tensor.sizes[i];
  }
  for (size_t i = 0; i < tensor.sizes.size(); ++i) {
    m_index.push_back(0);
  }
  m_position = m_start;
  size_t dims = tensor.sizes.size();
  if (dims > 0 && tensor.strides[dims - 1] == 1) {
    m_run = static_cast<uint64_t>(tensor.sizes[dims - 1]);
  }
}

uint64_t TensorBytes::read(uint8_t* to, uint64_t capacity) {
  const uint8_t* storage = m_tensor.storage->bytes.data;
  uint64_t left = m_size - m_done;
  if (left == 0) {
    return 0;  // done, or an empty tensor (whose storage may have no bytes at all)
  }
  if (m_one_range) {
    // Pieces, or a range of 64 KiB and more of a file, are read with pread
    // into the caller's buffer: about twice as fast as touching the mapped
    // pages, which the kernel must map first (see verify.cc); less is copied
    // from the map.
    uint64_t n = std::min(left, capacity - capacity % m_element);
    read_storage_range(*m_tensor.storage, m_start + m_done, to, n, m_log);
    m_done += n;
    return n;
  }
  uint64_t written = 0;
  size_t dims = m_tensor.sizes.size();
  while (m_done < m_size) {
    // The rest of the current run (from the innermost index on), or one element.
    uint64_t inner = dims == 0 ? 0 : static_cast<uint64_t>(m_index[dims - 1]);
    uint64_t elements = m_run > 1 ? m_run - inner : 1;
    uint64_t room = (capacity - written) / m_element;
    if (room == 0) {
      break;
    }
    elements = std::min(elements, room);
    if (has_pieces(*m_tensor.storage)) {
      // A view of a consolidated storage: rare, so read run by run.
      read_storage_range(*m_tensor.storage, m_position, to + written, elements * m_element);
    } else {
      std::memcpy(to + written, storage + m_position, elements * m_element);
    }
    written += elements * m_element;
    m_done += elements * m_element;
    // Advance the index by `elements` along the innermost dimension, carrying.
    if (dims == 0) {
      break;
    }
    m_index[dims - 1] += static_cast<int64_t>(elements);
    m_position += elements * static_cast<uint64_t>(m_tensor.strides[dims - 1]) * m_element;
    for (size_t d = dims; d-- > 0;) {
      if (m_index[d] < m_tensor.sizes[d]) {
        break;
      }
      if (d == 0) {
        break;  // done: m_done == m_size
      }
      m_position -= static_cast<uint64_t>(m_index[d]) *
                    static_cast<uint64_t>(m_tensor.strides[d]) * m_element;
      m_index[d] = 0;
      m_index[d - 1] += 1;
      m_position += static_cast<uint64_t>(m_tensor.strides[d - 1]) * m_element;
    }
  }
  return written;
}

}  // namespace ckpt
