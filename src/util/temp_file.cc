// Temporary output files (see temp_file.h). Each live one is also recorded in
// a process-wide slot so that a signal handler can remove it on SIGINT/SIGTERM.
#include "ckpt/temp_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ckpt/error.h"

namespace ckpt {
namespace {

// The live temporary file's path, for the signal handler (one conversion runs
// per process at a time).
char g_live_path[4096] = {0};

void remove_and_reraise(int signal_number) {
  if (g_live_path[0] != '\0') {
    ::unlink(g_live_path);
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

std::string folder_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    return ".";
  }
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

TempFile::TempFile(const std::string& destination) : m_destination(destination) {
  std::string folder = folder_of(destination);
  std::string pattern = folder + "/." + name_of(destination) + ".tmp-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  m_fd = ::mkstemp(buffer.data());
  if (m_fd < 0) {
    throw Error(destination + ": cannot create a temporary file in " + folder + ": " +
                std::strerror(errno));
  }
  m_path = buffer.data();
  ::fchmod(m_fd, 0644 & ~[] { mode_t mask = ::umask(0); ::umask(mask); return mask; }());
  if (m_path.size() < sizeof g_live_path) {
    std::memcpy(g_live_path, m_path.c_str(), m_path.size() + 1);
    std::signal(SIGINT, remove_and_reraise);
    std::signal(SIGTERM, remove_and_reraise);
    std::signal(SIGHUP, remove_and_reraise);
  }
}

TempFile::~TempFile() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
  if (!m_committed) {
    ::unlink(m_path.c_str());
  }
  g_live_path[0] = '\0';
}

void TempFile::commit() {
  if (::close(m_fd) != 0) {
    m_fd = -1;
    throw Error(m_destination + ": cannot write: " + std::strerror(errno));
  }
  m_fd = -1;
  if (::rename(m_path.c_str(), m_destination.c_str()) != 0) {
    throw Error(m_destination + ": cannot rename the finished output into place: " +
                std::strerror(errno));
  }
  m_committed = true;
}

}  // namespace ckpt
