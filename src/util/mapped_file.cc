// Read-only file mapping (see mapped_file.h).
#include "ckpt/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "ckpt/error.h"

namespace ckpt {

MappedFile MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(path + ": cannot open: " + std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int saved = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(saved));
  }
  if (S_ISDIR(info.st_mode)) {
    ::close(fd);
    throw Error(path + ": cannot read: is a directory");
  }
  MappedFile file;
  file.m_path = path;
  file.m_size = static_cast<uint64_t>(info.st_size);
  if (file.m_size > 0) {
    void* data = ::mmap(nullptr, file.m_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      int saved = errno;
      ::close(fd);
      throw Error(path + ": cannot map: " + std::strerror(saved));
    }
    file.m_data = static_cast<const uint8_t*>(data);
  }
  ::close(fd);
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    this->~MappedFile();
    new (this) MappedFile(std::move(other));
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (m_data != nullptr) {
    ::munmap(const_cast<uint8_t*>(m_data), m_size);
  }
}

}  // namespace ckpt
