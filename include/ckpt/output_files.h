// Where a sink writes: one temporary file beside each file it produces
// (TempFile), all renamed into place only by `commit()` once every one is
// written and verified, in the order they were created (so a sharded
// output's index, created last, appears last). Until then, and on any error,
// nothing but the temporary files exists, and they are removed.
#pragma once

#include <deque>
#include <string>

#include "ckpt/temp_file.h"

namespace ckpt {

class OutputFiles {
public:
  // The temporary file that becomes `destination` on commit.
  TempFile& create(const std::string& destination);
  // The files created, in order.
  const std::deque<TempFile>& files() const { return m_files; }
  // Renames every file into place, in creation order.
  void commit();

private:
  std::deque<TempFile> m_files;  // a deque: TempFile neither moves nor copies
};

}  // namespace ckpt
