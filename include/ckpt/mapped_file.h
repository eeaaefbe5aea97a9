// A read-only memory map of a whole file: tensor bytes are read from the page
// cache in place, never copied into the heap.
#pragma once

#include <string>

#include "ckpt/graph.h"

namespace ckpt {

class MappedFile {
public:
  // Maps `path` read-only. Throws `Error` naming the file and the system's
  // reason when it cannot be opened or mapped.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  ByteSpan bytes() const { return {m_data, m_size}; }
  const std::string& path() const { return m_path; }

private:
  std::string m_path;
  const uint8_t* m_data = nullptr;
  uint64_t m_size = 0;
};

}  // namespace ckpt
