// Helpers shared by the unit tests.
#pragma once

#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/graph.h"
#include "ckpt/pickle.h"

namespace ckpt::test {

inline ByteSpan span_of(const std::string& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

// A fresh folder under the test temp dir, removed at the end.
class Scratch {
public:
  Scratch() {
    std::string pattern = ::testing::TempDir() + "ckpt_test_XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    m_path = ::mkdtemp(buffer.data());
  }
  ~Scratch() { std::filesystem::remove_all(m_path); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string operator/(const std::string& relative) const { return m_path + "/" + relative; }
  const std::string& path() const { return m_path; }

private:
  std::string m_path;
};

// Writes `text` to `path`, making its folders.
inline void put(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// `value` as 8 little-endian bytes (a safetensors header length).
inline std::string le64(uint64_t value) {
  std::string out;
  for (int i = 0; i < 8; ++i) {
    out += static_cast<char>((value >> (8 * i)) & 0xff);
  }
  return out;
}

// Decodes a pickle that holds no persistent ids.
inline Node* decode_plain(Graph& graph, const std::string& bytes) {
  return decode_pickle(graph, span_of(bytes), [](Graph&, Node*) -> Node* {
    throw FormatError("unexpected persistent id");
  });
}

// The message of the Error `fn` throws, or "no error".
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// The message of the FormatError `fn` throws, or "no error".
template <typename Fn>
std::string format_error_of(Fn fn) {
  try {
    fn();
  } catch (const FormatError& e) {
    return e.what();
  } catch (const Error& e) {
    return std::string("Error: ") + e.what();
  }
  return "no error";
}

}  // namespace ckpt::test
