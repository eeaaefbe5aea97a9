// Element types of tensors and storages, the names pickles use for them, and
// the names users give them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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

// The typed storage class torch.save pickles `dtype`'s storages under
// (`FloatStorage`), or "" for a dtype that has none (uint16, float8_*: torch
// pickles those as `UntypedStorage` with `_rebuild_tensor_v3`).
std::string_view storage_class_name(Dtype dtype);

// The dtype torch's global `torch.<name>` denotes (`float32`, `float`, `half`,
// `bfloat16`, `float8_e4m3fn`, …), as `_rebuild_tensor_v3` passes it.
std::optional<Dtype> dtype_of_torch_name(std::string_view name);

// The dtype a user names: torch's names and aliases with or without `torch.`
// (`float16`, `half`, `torch.bfloat16`, `float`) and the short names of
// mixed-precision flags (`fp16`, `bf16`, `fp32`, `fp64`); nullopt if none.
std::optional<Dtype> dtype_named(std::string name);

// "unknown dtype '`name`'", with a "did you mean" hint when one is close.
std::string unknown_dtype(const std::string& name);

// The dtype named by `--dtype` (as `dtype_named`). Throws `Error` (usage)
// with a suggestion for an unknown name.
Dtype parse_dtype_name(const std::string& text);

// True for the floating-point dtypes (`float8_*`, `float16`, `bfloat16`,
// `float32`, `float64`): those `--dtype` constrains, as `Module.to(dtype)`
// converts only them.
bool is_floating_dtype(Dtype dtype);

}  // namespace ckpt
