// Element types: sizes and the names torch pickles them under (storage classes
// such as `torch.HalfStorage`, dtype globals such as `torch.float8_e4m3fn`),
// and the names users give them (`--dtype`, expected-keys files), with a
// "did you mean" hint for a misspelt one.
#include "ckpt/dtype.h"

#include <array>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/spellcheck.h"

namespace ckpt {
namespace {

struct DtypeFacts {
  Dtype dtype;
  int size;
  std::string_view name;           // torch's canonical name
  std::string_view storage_class;  // the typed storage class, or empty
  std::string_view alias;          // a second torch name (`float`, `half`), or empty
};

constexpr std::array<DtypeFacts, 26> k_dtypes = {{
    {Dtype::k_float32, 4, "float32", "FloatStorage", "float"},
    {Dtype::k_float64, 8, "float64", "DoubleStorage", "double"},
    {Dtype::k_float16, 2, "float16", "HalfStorage", "half"},
    {Dtype::k_bfloat16, 2, "bfloat16", "BFloat16Storage", ""},
    {Dtype::k_int64, 8, "int64", "LongStorage", "long"},
    {Dtype::k_int32, 4, "int32", "IntStorage", "int"},
    {Dtype::k_int16, 2, "int16", "ShortStorage", "short"},
    {Dtype::k_int8, 1, "int8", "CharStorage", ""},
    {Dtype::k_uint8, 1, "uint8", "ByteStorage", ""},
    {Dtype::k_bool, 1, "bool", "BoolStorage", ""},
    {Dtype::k_complex32, 4, "complex32", "ComplexHalfStorage", "chalf"},
    {Dtype::k_complex64, 8, "complex64", "ComplexFloatStorage", "cfloat"},
    {Dtype::k_complex128, 16, "complex128", "ComplexDoubleStorage", "cdouble"},
    {Dtype::k_qint8, 1, "qint8", "QInt8Storage", ""},
    {Dtype::k_quint8, 1, "quint8", "QUInt8Storage", ""},
    {Dtype::k_qint32, 4, "qint32", "QInt32Storage", ""},
    {Dtype::k_quint4x2, 1, "quint4x2", "QUInt4x2Storage", ""},
    {Dtype::k_quint2x4, 1, "quint2x4", "QUInt2x4Storage", ""},
    {Dtype::k_uint16, 2, "uint16", "", ""},
    {Dtype::k_uint32, 4, "uint32", "", ""},
    {Dtype::k_uint64, 8, "uint64", "", ""},
    {Dtype::k_float8_e5m2, 1, "float8_e5m2", "", ""},
    {Dtype::k_float8_e4m3fn, 1, "float8_e4m3fn", "", ""},
    {Dtype::k_float8_e5m2fnuz, 1, "float8_e5m2fnuz", "", ""},
    {Dtype::k_float8_e4m3fnuz, 1, "float8_e4m3fnuz", "", ""},
    {Dtype::k_untyped, 1, "uint8", "UntypedStorage", ""},
}};

const DtypeFacts& facts(Dtype dtype) {
  for (const DtypeFacts& f : k_dtypes) {
    if (f.dtype == dtype) {
      return f;
    }
  }
  return k_dtypes.back();
}

}  // namespace

int element_size(Dtype dtype) { return facts(dtype).size; }

std::string_view dtype_name(Dtype dtype) { return facts(dtype).name; }

std::optional<Dtype> dtype_of_storage_class(std::string_view name) {
  for (const DtypeFacts& f : k_dtypes) {
    if (!f.storage_class.empty() && f.storage_class == name) {
      return f.dtype;
    }
  }
  return std::nullopt;
}

std::string_view storage_class_name(Dtype dtype) {
  return dtype == Dtype::k_untyped ? std::string_view() : facts(dtype).storage_class;
}

std::optional<Dtype> dtype_of_torch_name(std::string_view name) {
  for (const DtypeFacts& f : k_dtypes) {
    if (f.dtype != Dtype::k_untyped && (f.name == name || (!f.alias.empty() && f.alias == name))) {
      return f.dtype;
    }
  }
  return std::nullopt;
}

std::optional<Dtype> dtype_named(std::string name) {
  if (name.rfind("torch.", 0) == 0) {
    name = name.substr(6);
  }
  // The short names of mixed-precision flags (Lightning's `precision`,
  // accelerate's `--mixed_precision`, DeepSpeed's `bf16`/`fp16`).
  static const std::pair<const char*, Dtype> k_short[] = {{"fp16", Dtype::k_float16},
                                                          {"bf16", Dtype::k_bfloat16},
                                                          {"fp32", Dtype::k_float32},
                                                          {"fp64", Dtype::k_float64}};
  for (const auto& [short_name, dtype] : k_short) {
    if (name == short_name) {
      return dtype;
    }
  }
  return dtype_of_torch_name(name);
}

namespace {

std::vector<std::string> dtype_names() {
  std::vector<std::string> names;
  for (int d = 0; d < static_cast<int>(Dtype::k_untyped); ++d) {
    names.emplace_back(dtype_name(static_cast<Dtype>(d)));
  }
  return names;
}

}  // namespace

std::string unknown_dtype(const std::string& name) {
  std::string text = "unknown dtype '" + name + "'";
  if (std::optional<std::string> close = closest_match(name, dtype_names())) {
    text += ", did you mean '" + *close + "'?";
  }
  return text;
}

Dtype parse_dtype_name(const std::string& text) {
  std::optional<Dtype> dtype = dtype_named(text);
  if (!dtype) {
    throw Error("--dtype: " + unknown_dtype(text), ExitStatus::k_usage);
  }
  return *dtype;
}

bool is_floating_dtype(Dtype dtype) {
  switch (dtype) {
    case Dtype::k_float16:
    case Dtype::k_bfloat16:
    case Dtype::k_float32:
    case Dtype::k_float64:
    case Dtype::k_float8_e5m2:
    case Dtype::k_float8_e4m3fn:
    case Dtype::k_float8_e5m2fnuz:
    case Dtype::k_float8_e4m3fnuz:
      return true;
    default:
      return false;
  }
}

}  // namespace ckpt
