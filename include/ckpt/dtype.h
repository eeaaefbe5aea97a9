// Element types of tensors and storages, and the names pickles use for them.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ckpt {

// Every element type a checkpoint's storages can hold. `k_untyped` is a
// `torch.UntypedStorage` (bytes) whose tensor dtype comes from elsewhere.
enum class Dtype : uint8_t {
  k_float32, k_float64, k_float16, k_bfloat16,
  k_int64, k_int32, k_int16, k_int8, k_uint8, k_bool,
  k_complex32, k_complex64, k_complex128,
  k_qint8, k_quint8, k_qint32, k_quint4x2, k_quint2x4,
  k_uint16, k_uint32, k_uint64,
  k_float8_e5m2, k_float8_e4m3fn, k_float8_e5m2fnuz, k_float8_e4m3fnuz,
  k_untyped,
};

// Bytes per element of `dtype` (1 for `k_untyped`).
int element_size(Dtype dtype);

// The dtype's name as torch prints it, without `torch.` (`float32`, `bfloat16`).
std::string_view dtype_name(Dtype dtype);

// The dtype a storage class stores: `FloatStorage` → float32, `UntypedStorage`
// → untyped. `name` is the class name without `torch.`.
std::optional<Dtype> dtype_of_storage_class(std::string_view name);

// The dtype torch's global `torch.<name>` denotes (`float32`, `float`, `half`,
// `bfloat16`, `float8_e4m3fn`, …), as `_rebuild_tensor_v3` passes it.
std::optional<Dtype> dtype_of_torch_name(std::string_view name);

}  // namespace ckpt
