// ckpt_cast_tool FROM TO IN OUT [portable]: casts the raw little-endian elements of file
// IN from dtype FROM to dtype TO (torch names: float32, float64, float16,
// bfloat16) with ckpt::cast_elements and writes them to OUT. Built only for
// tests/e2e/cast_judge.py, which compares OUT with torch's `.to()`. It casts
// in chunks of an odd element count, as a streaming converter would, so that
// chunk tails are exercised too. `portable` forces the plain C++ loops where
// the CPU has a faster path (F16C for float32 → float16).
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "ckpt/cast.h"

namespace {

ckpt::Dtype parse_dtype(const std::string& name) {
  const std::optional<ckpt::Dtype> dtype = ckpt::dtype_of_torch_name(name);
  if (!dtype) {
    throw std::runtime_error("unknown dtype '" + name + "'");
  }
  return *dtype;
}

}  // namespace

int main(int argc, char** argv) {
  const bool portable = argc == 6 && std::string(argv[5]) == "portable";
  if (argc != 5 && !portable) {
    std::fprintf(stderr, "usage: ckpt_cast_tool FROM TO IN OUT [portable]\n");
    return 2;
  }
  const ckpt::CastPath path = portable ? ckpt::CastPath::k_portable : ckpt::CastPath::k_best;
  try {
    const ckpt::Dtype from = parse_dtype(argv[1]);
    const ckpt::Dtype to = parse_dtype(argv[2]);
    std::ifstream in(argv[3], std::ios::binary);
    if (!in) {
      throw std::runtime_error(std::string(argv[3]) + ": cannot open for reading");
    }
    const std::vector<char> input((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t in_size = static_cast<size_t>(ckpt::element_size(from));
    if (input.size() % in_size != 0) {
      throw std::runtime_error(std::string(argv[3]) + ": " + std::to_string(input.size()) +
                               " bytes is not a whole number of " + std::string(ckpt::dtype_name(from)));
    }
    const size_t count = input.size() / in_size;
    std::vector<char> output(ckpt::cast_output_bytes(to, count));
    constexpr size_t k_chunk = 100003;
    for (size_t i = 0; i < count; i += k_chunk) {
      const size_t n = count - i < k_chunk ? count - i : k_chunk;
      ckpt::cast_elements(from, to, input.data() + i * in_size,
                          output.data() + ckpt::cast_output_bytes(to, i), n, path);
    }
    std::ofstream out(argv[4], std::ios::binary);
    out.write(output.data(), static_cast<std::streamsize>(output.size()));
    if (!out) {
      throw std::runtime_error(std::string(argv[4]) + ": cannot write");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_cast_tool: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
