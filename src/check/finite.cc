// NaN and Inf in a tensor, found in its bytes where they lie in the mapped
// file: no LibTorch, no copy. Every floating-point format marks them by an
// all-ones exponent (NaN with a non-zero mantissa), except the float8
// variants that have no Inf: e4m3fn (NaN is S.1111.111) and the `fnuz`
// ones (NaN is the lone pattern 0x80). Complex elements are two floats.
//
// A contiguous tensor is scanned in one pass that only counts (a loop the
// compiler vectorizes); the slower pass that tells NaN from Inf and finds
// the first index runs only when that count is not zero. Views follow their
// strides.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ckpt/check.h"
#include "ckpt/storage_pieces.h"
#include "ckpt/tensor_bytes.h"

namespace ckpt {
namespace {

enum class Special { k_ieee, k_nan_all_ones, k_nan_0x80 };

struct Format {
  int bytes = 0;       // of one float; 0: no NaN or Inf in this dtype
  int parts = 1;       // 2 for complex
  uint64_t exponent = 0;
  uint64_t mantissa = 0;
  Special special = Special::k_ieee;
};

Format format_of(Dtype dtype) {
  switch (dtype) {
    case Dtype::k_float32: return {4, 1, 0x7f800000u, 0x007fffffu, Special::k_ieee};
    case Dtype::k_float64: return {8, 1, 0x7ff0000000000000u, 0x000fffffffffffffu, Special::k_ieee};
    case Dtype::k_float16: return {2, 1, 0x7c00u, 0x03ffu, Special::k_ieee};
    case Dtype::k_bfloat16: return {2, 1, 0x7f80u, 0x007fu, Special::k_ieee};
    case Dtype::k_complex32: return {2, 2, 0x7c00u, 0x03ffu, Special::k_ieee};
    case Dtype::k_complex64: return {4, 2, 0x7f800000u, 0x007fffffu, Special::k_ieee};
    case Dtype::k_complex128: return {8, 2, 0x7ff0000000000000u, 0x000fffffffffffffu, Special::k_ieee};
    case Dtype::k_float8_e5m2: return {1, 1, 0x7cu, 0x03u, Special::k_ieee};
    case Dtype::k_float8_e4m3fn: return {1, 1, 0x7fu, 0, Special::k_nan_all_ones};
    case Dtype::k_float8_e5m2fnuz:
    case Dtype::k_float8_e4m3fnuz: return {1, 1, 0x80u, 0, Special::k_nan_0x80};
    default: return {};
  }
}

uint64_t load(const uint8_t* p, int bytes) {
  switch (bytes) {
    case 1: return *p;
    case 2: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

// 0 finite, 1 NaN, 2 Inf, for one float.
int classify(uint64_t bits, const Format& f) {
  switch (f.special) {
    case Special::k_nan_all_ones: return (bits & f.exponent) == f.exponent ? 1 : 0;
    case Special::k_nan_0x80: return bits == f.exponent ? 1 : 0;
    case Special::k_ieee: break;
  }
  if ((bits & f.exponent) != f.exponent) {
    return 0;
  }
  return (bits & f.mantissa) != 0 ? 1 : 2;
}

// 0, 1 or 2 for the element at `p`: NaN when a part is NaN, else Inf when a
// part is.
int classify_element(const uint8_t* p, const Format& f) {
  int worst = 0;
  for (int part = 0; part < f.parts; ++part) {
    int kind = classify(load(p + part * f.bytes, f.bytes), f);
    if (kind == 1) {
      return 1;
    }
    worst = std::max(worst, kind);
  }
  return worst;
}

// How many floats in `count` contiguous ones at `p` may be special: a
// branch-free count of the exponent test (NaN/Inf for IEEE formats).
template <typename T>
uint64_t count_suspects(const uint8_t* p, uint64_t count, const Format& f) {
  uint64_t suspects = 0;
  auto exponent = static_cast<T>(f.exponent);
  for (uint64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    suspects += static_cast<uint64_t>((v & exponent) == exponent);
  }
  return suspects;
}

uint64_t suspects_in(const uint8_t* p, uint64_t floats, const Format& f) {
  if (f.special == Special::k_nan_0x80) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < floats; ++i) {
      n += static_cast<uint64_t>(p[i] == 0x80);
    }
    return n;
  }
  switch (f.bytes) {
    case 1: return count_suspects<uint8_t>(p, floats, f);
    case 2: return count_suspects<uint16_t>(p, floats, f);
    case 4: return count_suspects<uint32_t>(p, floats, f);
    default: return count_suspects<uint64_t>(p, floats, f);
  }
}

std::vector<int64_t> unravel(int64_t linear, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> index(sizes.size(), 0);
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] > 0) {
      index[d] = linear % sizes[d];
      linear /= sizes[d];
    }
  }
  return index;
}

bool is_contiguous(const TensorRef& t) {
  int64_t expected = 1;
  for (size_t d = t.sizes.size(); d-- > 0;) {
    if (t.sizes[d] != 1 && t.strides[d] != expected) {
      return false;
    }
    expected *= t.sizes[d];
  }
  return true;
}

void note(NonFinite& out, int kind, const std::vector<int64_t>& index) {
  if (kind == 0) {
    return;
  }
  (kind == 1 ? out.nan : out.inf) += 1;
  if (out.nan + out.inf == 1) {
    out.first = index;
  }
}

}  // namespace

NonFinite count_non_finite(const TensorRef& tensor) {
  NonFinite out;
  Format f = format_of(tensor.dtype);
  int64_t numel = tensor.numel();
  if (f.bytes == 0 || tensor.quantized || numel <= 0 || tensor.storage == nullptr) {
    return out;
  }
  const int64_t element = f.bytes * f.parts;
  if (has_pieces(*tensor.storage)) {
    // Consolidated from several files (DeepSpeed, DCP): read in row-major
    // order a buffer at a time.
    TensorBytes stream(tensor);
    std::vector<uint8_t> buffer(static_cast<size_t>(1 << 20) / static_cast<size_t>(element) *
                                static_cast<size_t>(element));
    int64_t first = 0;  // the buffer's first element
    while (uint64_t n = stream.read(buffer.data(), buffer.size())) {
      uint64_t count = n / static_cast<uint64_t>(element);
      if (suspects_in(buffer.data(), count * static_cast<uint64_t>(f.parts), f) != 0) {
        for (uint64_t i = 0; i < count; ++i) {
          int kind = classify_element(buffer.data() + i * static_cast<uint64_t>(element), f);
          if (kind != 0) {
            int64_t at = first + static_cast<int64_t>(i);
            note(out, kind, out.nan + out.inf == 0 ? unravel(at, tensor.sizes.vec())
                                                   : std::vector<int64_t>{});
          }
        }
      }
      first += static_cast<int64_t>(count);
    }
    return out;
  }
  const uint8_t* base = storage_bytes(*tensor.storage).bytes.data + tensor.offset * element;
  if (is_contiguous(tensor)) {
    auto n = static_cast<uint64_t>(numel);
    if (suspects_in(base, n * static_cast<uint64_t>(f.parts), f) == 0) {
      return out;
    }
    for (int64_t i = 0; i < numel; ++i) {
      int kind = classify_element(base + i * element, f);
      if (kind != 0) {
        note(out, kind, out.nan + out.inf == 0 ? unravel(i, tensor.sizes.vec()) : std::vector<int64_t>{});
      }
    }
    return out;
  }
  // A view: walk its index space like an odometer.
  std::vector<int64_t> index(tensor.sizes.size(), 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t at = 0;
    for (size_t d = 0; d < index.size(); ++d) {
      at += index[d] * tensor.strides[d];
    }
    int kind = classify_element(base + at * element, f);
    if (kind != 0) {
      note(out, kind, index);
    }
    for (size_t d = index.size(); d-- > 0;) {
      if (++index[d] < tensor.sizes[d]) {
        break;
      }
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace ckpt
