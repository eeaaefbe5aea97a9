#include "ckpt/output_files.h"

namespace ckpt {

TempFile& OutputFiles::create(const std::string& destination) {
  m_files.emplace_back(destination);
  return m_files.back();
}

void OutputFiles::commit() {
  for (TempFile& file : m_files) {
    file.commit();
  }
}

}  // namespace ckpt
