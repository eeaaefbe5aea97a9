// Element types: sizes and the names torch pickles them under (storage classes
// such as `torch.HalfStorage`, dtype globals such as `torch.float8_e4m3fn`).
#include "ckpt/dtype.h"

#include <array>

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

std::optional<Dtype> dtype_of_torch_name(std::string_view name) {
  for (const DtypeFacts& f : k_dtypes) {
    if (f.dtype != Dtype::k_untyped && (f.name == name || (!f.alias.empty() && f.alias == name))) {
      return f.dtype;
    }
  }
  return std::nullopt;
}

}  // namespace ckpt
