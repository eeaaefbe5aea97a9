// This file writes the output archive through LibTorch's PyTorchStreamWriter,
// the writer Python's torch.save uses, so the layout (stored records, 64-byte
// aligned data, zip64 where needed) is torch's own. The writer is given a
// callback rather than a file name: with a name it would call the archive
// folder after the temporary file.
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ckpt/error.h"
#include "ckpt/writer.h"

namespace ckpt {

uint64_t write_checkpoint(const EncodedPickle& pickle, int fd, const std::string& path,
                          const std::function<void(const char*, uint64_t, uint64_t)>& progress) {
  uint64_t total = pickle.bytes.size();
  for (const Storage* storage : pickle.storages) {
    total += storage->bytes.size;
  }
  uint64_t written = 0;
  int write_errno = 0;
  auto sink = [&](const void* data, size_t size) -> size_t {
    const char* bytes = static_cast<const char*>(data);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::write(fd, bytes + done, size - done);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        write_errno = n < 0 ? errno : ENOSPC;
        return done;
      }
      done += static_cast<size_t>(n);
    }
    written += done;
    return done;
  };
  try {
    caffe2::serialize::PyTorchStreamWriter writer(sink);
    writer.writeRecord("data.pkl", pickle.bytes.data(), pickle.bytes.size());
    writer.writeRecord("byteorder", "little", 6);
    for (size_t i = 0; i < pickle.storages.size(); ++i) {
      const Storage* storage = pickle.storages[i];
      writer.writeRecord("data/" + std::to_string(i), storage->bytes.data, storage->bytes.size);
      if (progress) {
        progress("write", written, total);
      }
    }
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    if (write_errno != 0) {
      throw Error(path + ": cannot write: " + std::strerror(write_errno));
    }
    throw Error(path + ": cannot write: " + e.what_without_backtrace());
  }
  if (write_errno != 0) {
    throw Error(path + ": cannot write: " + std::strerror(write_errno));
  }
  return written;
}

}  // namespace ckpt
