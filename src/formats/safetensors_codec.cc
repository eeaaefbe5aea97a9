// This file implements the safetensors header codec: the reader's checks, the
// writer's layout, and save_model's choice of name among shared tensors.
//
// The reader applies the reference reader's checks (the safetensors crate's
// `read_metadata` and `Metadata::validate`) in the same order, so a file is
// refused here exactly when the reference refuses it, and for the first reason
// the reference would give. One check is added: a key twice in one object,
// which the reference resolves silently to the last one (nlohmann's DOM would
// too, so the JSON is read through a SAX handler that sees every key). The
// writer reproduces the crate's `prepare`: tensors sorted by dtype, descending
// in the crate's enum order, then by name; offsets assigned in that order; the
// header as serde_json's compact output, padded with spaces to a multiple of 8.
#include "ckpt/safetensors_codec.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <unordered_set>
#include <utility>

#include "ckpt/error.h"
#include "ckpt/hf_index.h"  // quoted_name
#include "ckpt/spellcheck.h"
#include "util/utf8.h"

namespace ckpt {
namespace {

constexpr uint64_t k_length_bytes = 8;
constexpr std::string_view k_lfs_pointer = "version https://git-lfs.github.com/spec/";
constexpr int k_max_depth = 127;  // serde_json's recursion limit (128, exclusive)

// The crate's `enum Dtype`, in declaration order: the writer sorts on it.
struct DtypeInfo {
  std::string_view name;
  int bits;
  std::optional<Dtype> dtype;
};

constexpr std::array<DtypeInfo, 22> k_dtypes = {{
    {"BOOL", 8, Dtype::k_bool},
    {"F4", 4, std::nullopt},
    {"F6_E2M3", 6, std::nullopt},
    {"F6_E3M2", 6, std::nullopt},
    {"U8", 8, Dtype::k_uint8},
    {"I8", 8, Dtype::k_int8},
    {"F8_E5M2", 8, Dtype::k_float8_e5m2},
    {"F8_E4M3", 8, Dtype::k_float8_e4m3fn},
    {"F8_E8M0", 8, std::nullopt},
    {"F8_E4M3FNUZ", 8, Dtype::k_float8_e4m3fnuz},
    {"F8_E5M2FNUZ", 8, Dtype::k_float8_e5m2fnuz},
    {"I16", 16, Dtype::k_int16},
    {"U16", 16, Dtype::k_uint16},
    {"F16", 16, Dtype::k_float16},
    {"BF16", 16, Dtype::k_bfloat16},
    {"I32", 32, Dtype::k_int32},
    {"U32", 32, Dtype::k_uint32},
    {"F32", 32, Dtype::k_float32},
    {"C64", 64, Dtype::k_complex64},
    {"F64", 64, Dtype::k_float64},
    {"I64", 64, Dtype::k_int64},
    {"U64", 64, Dtype::k_uint64},
}};

// The position of `name` in the crate's enum, or -1.
int dtype_rank(std::string_view name) {
  for (size_t i = 0; i < k_dtypes.size(); ++i) {
    if (k_dtypes[i].name == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

std::string in_quotes(std::string_view text) {
  return "'" + std::string(text) + "'";
}

// A near dtype string for an unknown one, compared in upper case (`f32` →
// `F32`, `F8_E4M3FN` → `F8_E4M3`).
std::optional<std::string> close_dtype(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  std::vector<std::string> names;
  for (const DtypeInfo& info : k_dtypes) {
    names.emplace_back(info.name);
  }
  return closest_match(upper, names);
}

uint64_t read_le64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = (value << 8) | bytes[i];
  }
  return value;
}

bool is_lfs_pointer(ByteSpan bytes) {
  return bytes.size >= k_lfs_pointer.size() &&
         std::memcmp(bytes.data, k_lfs_pointer.data(), k_lfs_pointer.size()) == 0;
}

bool is_utf8(std::string_view text) {
  return first_invalid_utf8(text) == text.size();
}

// A JSON value as the header holds it; objects keep their keys in order.
struct JsonValue {
  enum class Kind { k_null, k_bool, k_negative, k_unsigned, k_float, k_string, k_array, k_object };
  Kind kind = Kind::k_null;
  uint64_t number = 0;
  std::string text;
  std::vector<JsonValue> items;
  std::vector<std::pair<std::string, JsonValue>> members;
};

const char* kind_name(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::k_null: return "null";
    case JsonValue::Kind::k_bool: return "a boolean";
    case JsonValue::Kind::k_negative: return "a negative number";
    case JsonValue::Kind::k_unsigned: return "a number";
    case JsonValue::Kind::k_float: return "a fractional or out-of-range number";
    case JsonValue::Kind::k_string: return "a string";
    case JsonValue::Kind::k_array: return "a list";
    case JsonValue::Kind::k_object: return "an object";
  }
  return "?";
}

// Builds a JsonValue from nlohmann's SAX events, refusing a key twice in one
// object and nesting past serde_json's limit. Containers are built in place:
// `m_stack` points into the tree, and a container's parent does not grow while
// it is open.
class TreeBuilder : public nlohmann::json_sax<nlohmann::json> {
public:
  JsonValue root;
  std::string error;         // why the parse stopped, when a callback stopped it
  uint64_t error_byte = 0;   // for a syntax error: the offending byte in the header

  bool null() override { return put(JsonValue{}); }
  bool boolean(bool) override { return put(make(JsonValue::Kind::k_bool)); }
  bool number_integer(number_integer_t) override { return put(make(JsonValue::Kind::k_negative)); }
  bool number_unsigned(number_unsigned_t value) override {
    JsonValue v = make(JsonValue::Kind::k_unsigned);
    v.number = value;
    return put(std::move(v));
  }
  bool number_float(number_float_t, const string_t&) override {
    return put(make(JsonValue::Kind::k_float));
  }
  bool string(string_t& value) override {
    JsonValue v = make(JsonValue::Kind::k_string);
    v.text = std::move(value);
    return put(std::move(v));
  }
  bool binary(binary_t&) override { return put(JsonValue{}); }
  bool start_object(std::size_t) override { return open(JsonValue::Kind::k_object); }
  bool key(string_t& value) override {
    Frame& frame = m_stack.back();
    if (!frame.keys.insert(value).second) {
      error = duplicate_message(value);
      return false;
    }
    m_key = std::move(value);
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(JsonValue::Kind::k_array); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // "[json.exception.parse_error.101] parse error at line 1, column 3: syntax
    // error while parsing …": keep what follows the line and column.
    std::string what = ex.what();
    size_t column = what.find("column ");
    size_t colon = column == std::string::npos ? std::string::npos : what.find(": ", column);
    error = colon == std::string::npos ? what : what.substr(colon + 2);
    error_byte = position == 0 ? 0 : position - 1;
    m_syntax = true;
    return false;
  }

  bool syntax_error() const { return m_syntax; }

private:
  struct Frame {
    JsonValue* value;
    std::string key;  // the key this container is the value of ("" at the top)
    std::unordered_set<std::string> keys;
  };

  static JsonValue make(JsonValue::Kind kind) {
    JsonValue v;
    v.kind = kind;
    return v;
  }

  std::string duplicate_message(const std::string& key) const {
    if (m_stack.size() == 1) {
      return key == "__metadata__" ? "__metadata__: appears twice in the header"
                                   : "tensor " + in_quotes(key) + ": named twice in the header";
    }
    const std::string& parent = m_stack.back().key;
    if (m_stack.size() == 2) {
      return parent == "__metadata__"
                 ? "__metadata__: key " + in_quotes(key) + " appears twice"
                 : "tensor " + in_quotes(parent) + ": field " + in_quotes(key) + " appears twice";
    }
    return "header: key " + in_quotes(key) + " appears twice in one object";
  }

  // Adds `value` where the parser is: the root, an array's next item, or the
  // value of the pending key. Returns where it now lives.
  JsonValue* place(JsonValue value) {
    if (m_stack.empty()) {
      root = std::move(value);
      return &root;
    }
    JsonValue* parent = m_stack.back().value;
    if (parent->kind == JsonValue::Kind::k_array) {
      parent->items.push_back(std::move(value));
      return &parent->items.back();
    }
    parent->members.emplace_back(std::move(m_key), std::move(value));
    return &parent->members.back().second;
  }

  bool put(JsonValue value) {
    place(std::move(value));
    return true;
  }

  bool open(JsonValue::Kind kind) {
    if (static_cast<int>(m_stack.size()) >= k_max_depth) {
      error = "header: JSON nested deeper than " + std::to_string(k_max_depth) +
              " levels (the reference reader's recursion limit)";
      return false;
    }
    std::string key = m_stack.size() == 1 ? m_key : std::string();
    JsonValue* value = place(make(kind));
    m_stack.push_back(Frame{value, std::move(key), {}});
    return true;
  }

  bool close() {
    m_stack.pop_back();
    return true;
  }

  std::vector<Frame> m_stack;
  std::string m_key;
  bool m_syntax = false;
};

std::string offsets_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + "]";
}

// A list of non-negative integers that fit 64 bits, or none.
std::optional<std::vector<uint64_t>> unsigned_list(const JsonValue& value) {
  if (value.kind != JsonValue::Kind::k_array) {
    return std::nullopt;
  }
  std::vector<uint64_t> out;
  out.reserve(value.items.size());
  for (const JsonValue& item : value.items) {
    if (item.kind != JsonValue::Kind::k_unsigned) {
      return std::nullopt;
    }
    out.push_back(item.number);
  }
  return out;
}

// The tensor `name`'s header entry, checked as serde deserialises `TensorInfo`:
// fields in the object's order, unknown fields ignored, missing ones last.
SafetensorsEntry read_entry(const std::string& name, const JsonValue& value) {
  std::string where = "tensor " + in_quotes(name) + ": ";
  if (value.kind != JsonValue::Kind::k_object) {
    throw FormatError(where + "its header entry is " + kind_name(value.kind) +
                      ", not an object of dtype, shape and data_offsets");
  }
  SafetensorsEntry entry;
  entry.name = name;
  bool seen_dtype = false;
  bool seen_shape = false;
  bool seen_offsets = false;
  for (const auto& [field, v] : value.members) {
    if (field == "dtype") {
      if (v.kind != JsonValue::Kind::k_string) {
        throw FormatError(where + "dtype is " + kind_name(v.kind) + ", not a string");
      }
      int rank = dtype_rank(v.text);
      if (rank < 0) {
        std::string message = where + "unknown dtype " + in_quotes(v.text);
        if (std::optional<std::string> hint = close_dtype(v.text)) {
          message += ", did you mean " + in_quotes(*hint) + "?";
        }
        throw FormatError(message);
      }
      entry.dtype_name = v.text;
      entry.dtype = k_dtypes[rank].dtype;
      seen_dtype = true;
    } else if (field == "shape") {
      std::optional<std::vector<uint64_t>> shape = unsigned_list(v);
      if (!shape) {
        throw FormatError(where + "shape is not a list of non-negative 64-bit integers");
      }
      entry.shape = std::move(*shape);
      seen_shape = true;
    } else if (field == "data_offsets") {
      std::optional<std::vector<uint64_t>> offsets = unsigned_list(v);
      if (!offsets || offsets->size() != 2) {
        throw FormatError(where + "data_offsets is not a list of two non-negative 64-bit integers");
      }
      entry.begin = (*offsets)[0];
      entry.end = (*offsets)[1];
      seen_offsets = true;
    }
  }
  for (auto [seen, field] : {std::pair{seen_dtype, "dtype"}, std::pair{seen_shape, "shape"},
                             std::pair{seen_offsets, "data_offsets"}}) {
    if (!seen) {
      throw FormatError(where + "no " + field + " in its header entry");
    }
  }
  return entry;
}

// The bytes `entry` takes: its element count times its dtype's bits, over 8.
// Throws, naming the tensor, when that overflows 64 bits or is not whole bytes.
uint64_t byte_size(const SafetensorsEntry& entry, int bits) {
  std::string where = "tensor " + in_quotes(entry.name) + ": ";
  uint64_t count = 1;
  bool overflow = false;
  for (uint64_t dim : entry.shape) {
    overflow = overflow || __builtin_mul_overflow(count, dim, &count);
  }
  uint64_t total_bits = 0;
  if (overflow || __builtin_mul_overflow(count, static_cast<uint64_t>(bits), &total_bits)) {
    throw FormatError(where + "shape " + shape_text(entry.shape) + " of " + entry.dtype_name +
                      " overflows 64 bits");
  }
  if (total_bits % 8 != 0) {
    throw FormatError(where + "shape " + shape_text(entry.shape) + " of " + entry.dtype_name +
                      " is " + std::to_string(total_bits) + " bits, not whole bytes");
  }
  return total_bits / 8;
}

// The JSON text of `text` as serde_json writes a string: `"` and `\` escaped,
// \b \t \n \f \r short, other control characters as \u00xx (lower-case hex),
// everything else (DEL and non-ASCII included) as it is.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char k_hex[] = "0123456789abcdef";
  out += '"';
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (byte < 0x20) {
          out += "\\u00";
          out += k_hex[byte >> 4];
          out += k_hex[byte & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace

std::optional<std::string_view> safetensors_dtype_name(Dtype dtype) {
  for (const DtypeInfo& info : k_dtypes) {
    if (info.dtype == dtype) {
      return info.name;
    }
  }
  return std::nullopt;
}

std::optional<Dtype> dtype_of_safetensors_name(std::string_view name) {
  int rank = dtype_rank(name);
  return rank < 0 ? std::nullopt : k_dtypes[rank].dtype;
}

int safetensors_dtype_bits(std::string_view name) {
  int rank = dtype_rank(name);
  return rank < 0 ? 0 : k_dtypes[rank].bits;
}

uint64_t safetensors_prefix_size(ByteSpan head, uint64_t file_size) {
  if (is_lfs_pointer(head)) {
    throw FormatError("a git-lfs pointer, not the file: run git lfs pull");
  }
  if (file_size < k_length_bytes) {
    throw FormatError("header@0: the file is " + std::to_string(file_size) +
                      " bytes, too short for the 8-byte header length");
  }
  if (head.size < k_length_bytes) {
    throw std::invalid_argument("safetensors_prefix_size: fewer than 8 bytes of the file given");
  }
  uint64_t n = read_le64(head.data);
  if (n > k_safetensors_max_header) {
    throw FormatError("header@0: header length " + std::to_string(n) +
                      " is over the reference reader's limit of 100000000 bytes");
  }
  if (n > file_size - k_length_bytes) {
    throw FormatError("header@0: header length " + std::to_string(n) +
                      " runs past the end of the file (" + std::to_string(file_size) + " bytes)");
  }
  return k_length_bytes + n;
}

SafetensorsHeader parse_safetensors_header(ByteSpan bytes, uint64_t file_size) {
  // Rules 1-3: the length, within the limit, within the file.
  uint64_t prefix = safetensors_prefix_size(bytes, file_size);
  if (bytes.size < prefix) {
    throw std::invalid_argument("parse_safetensors_header: " + std::to_string(bytes.size) +
                                " bytes given of a header that ends at byte " +
                                std::to_string(prefix));
  }
  SafetensorsHeader header;
  header.header_size = prefix - k_length_bytes;
  header.data_start = prefix;
  header.data_size = file_size - prefix;
  const uint8_t* text = bytes.data + k_length_bytes;
  uint64_t n = header.header_size;

  // Rule 4: UTF-8.
  uint64_t bad = first_invalid_utf8({reinterpret_cast<const char*>(text), n});
  if (bad != n) {
    throw FormatError("header@" + std::to_string(k_length_bytes + bad) +
                      ": the header is not valid UTF-8");
  }

  // Rule 5: one JSON object (serde_json: JSON whitespace around it, nothing
  // else; no byte-order mark, which nlohmann would skip).
  if (n >= 3 && text[0] == 0xef && text[1] == 0xbb && text[2] == 0xbf) {
    throw FormatError("header@8: invalid JSON: a byte-order mark before the header");
  }
  // nlohmann ends its input at a NUL byte, which serde_json refuses anywhere:
  // parse up to the first NUL, and report the NUL unless an error comes first.
  const char* first = reinterpret_cast<const char*>(text);
  uint64_t nul = static_cast<uint64_t>(std::find(first, first + n, '\0') - first);
  TreeBuilder tree;
  bool parsed = nlohmann::json::sax_parse(first, first + nul, &tree);
  if (nul != n && (parsed || (tree.syntax_error() && tree.error_byte >= nul))) {
    throw FormatError("header@" + std::to_string(k_length_bytes + nul) +
                      ": invalid JSON: a NUL byte");
  }
  if (!parsed) {
    if (tree.syntax_error()) {
      throw FormatError("header@" + std::to_string(k_length_bytes + tree.error_byte) +
                        ": invalid JSON: " + tree.error);
    }
    throw FormatError(tree.error);
  }
  if (tree.root.kind != JsonValue::Kind::k_object) {
    throw FormatError("header@8: the header is " + std::string(kind_name(tree.root.kind)) +
                      ", not a JSON object");
  }

  // `__metadata__` (deserialised first: serde takes it out of the map as it
  // meets it, and the tensors after), then each tensor's dtype, shape and
  // offsets in the header's order.
  for (const auto& [key, value] : tree.root.members) {
    if (key != "__metadata__" || value.kind == JsonValue::Kind::k_null) {
      continue;
    }
    if (value.kind != JsonValue::Kind::k_object) {
      throw FormatError("__metadata__: is " + std::string(kind_name(value.kind)) +
                        ", not an object of strings");
    }
    std::map<std::string, std::string> metadata;
    for (const auto& [name, item] : value.members) {
      if (item.kind != JsonValue::Kind::k_string) {
        throw FormatError("__metadata__: the value of " + in_quotes(name) + " is " +
                          kind_name(item.kind) + ", not a string");
      }
      metadata[name] = item.text;
    }
    header.metadata = std::move(metadata);
  }
  for (const auto& [key, value] : tree.root.members) {
    if (key != "__metadata__") {
      header.tensors.push_back(read_entry(key, value));
    }
  }

  // Rules 6-7: in data_offsets order, each tensor starts where the previous one
  // ended and spans exactly its shape × dtype bytes.
  std::vector<const SafetensorsEntry*> sorted;
  sorted.reserve(header.tensors.size());
  for (const SafetensorsEntry& entry : header.tensors) {
    sorted.push_back(&entry);
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t start = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* entry : sorted) {
    std::string where = "tensor " + in_quotes(entry->name) + ": data_offsets " +
                        offsets_text(entry->begin, entry->end);
    if (entry->end < entry->begin) {
      throw FormatError(where + " end before they begin");
    }
    if (entry->begin > start) {
      throw FormatError(where + " leave bytes [" + std::to_string(start) + ", " +
                        std::to_string(entry->begin) + ") of the data to no tensor");
    }
    if (entry->begin < start) {
      throw FormatError(where + " overlap tensor " + in_quotes(previous->name) + ", which ends at " +
                        std::to_string(start));
    }
    start = entry->end;
    uint64_t size = byte_size(*entry, safetensors_dtype_bits(entry->dtype_name));
    if (entry->end - entry->begin != size) {
      throw FormatError(where + " span " + std::to_string(entry->end - entry->begin) +
                        " bytes, but shape " + shape_text(entry->shape) + " of " +
                        entry->dtype_name + " takes " + std::to_string(size));
    }
    previous = entry;
  }

  // Rule 8: the last tensor ends where the file does.
  if (start != header.data_size) {
    if (start < header.data_size) {
      uint64_t extra = header.data_size - start;
      throw FormatError("data@" + std::to_string(prefix + start) + ": " + std::to_string(extra) +
                        (extra == 1 ? " byte" : " bytes") +
                        " after the last tensor's data belong to no tensor");
    }
    throw FormatError("tensor " + in_quotes(previous->name) + ": data_offsets " +
                      offsets_text(previous->begin, previous->end) +
                      " run past the end of the file: the data buffer holds " +
                      std::to_string(header.data_size) + " bytes (truncated file?)");
  }
  return header;
}

bool is_git_lfs_pointer(ByteSpan head) { return is_lfs_pointer(head); }

bool looks_like_safetensors(ByteSpan head, uint64_t file_size) {
  if (head.size < k_length_bytes + 1 || file_size < head.size) {
    return false;
  }
  // A `{` after the length is the format's signature even when the length is
  // wrong, so that the reader, not "no format claims it", says what is wrong
  // with the length. A `[` only with a length the reference accepts: JSON
  // that is no object, which the reader then names.
  uint64_t n = read_le64(head.data);
  bool length_ok = n >= 2 && n <= k_safetensors_max_header && n <= file_size - k_length_bytes;
  uint64_t last = length_ok ? std::min<uint64_t>(head.size, k_length_bytes + n) : head.size;
  uint64_t first = k_length_bytes;
  if (last - first >= 3 && head.data[first] == 0xef && head.data[first + 1] == 0xbb &&
      head.data[first + 2] == 0xbf) {
    first += 3;  // a byte-order mark, which the parser then names
  }
  for (uint64_t i = first; i < last; ++i) {
    uint8_t c = head.data[i];
    if (c == '{' || (c == '[' && length_ok)) {
      return true;
    }
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      return false;
    }
  }
  return false;
}

SafetensorsLayout serialize_safetensors_header(
    const std::vector<SafetensorsEntry>& tensors,
    const std::optional<std::map<std::string, std::string>>& metadata) {
  SafetensorsLayout layout;
  std::vector<int> ranks(tensors.size());
  std::set<std::string_view> names;
  // The header is JSON, which the reference reader takes as UTF-8 only (a
  // pickle's key may be any bytes: Python 2's str, or a hostile file).
  if (metadata) {
    for (const auto& [key, value] : *metadata) {
      if (!is_utf8(key) || !is_utf8(value)) {
        throw FormatError("__metadata__: " + quoted_name(is_utf8(key) ? value : key, true) +
                          " is not valid UTF-8, which the header's JSON must be");
      }
    }
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& entry = tensors[i];
    if (!is_utf8(entry.name)) {
      throw FormatError("tensor " + quoted_name(entry.name, true) +
                        ": the name is not valid UTF-8, which the header's JSON must be "
                        "(--drop it, or write .pth)");
    }
    std::string where = "tensor " + in_quotes(entry.name) + ": ";
    if (entry.name == "__metadata__") {
      throw FormatError(where + "the name is the header's metadata key");
    }
    if (!names.insert(entry.name).second) {
      throw FormatError(where + "named twice");
    }
    std::string_view dtype_name = entry.dtype_name;
    if (dtype_name.empty()) {
      std::optional<std::string_view> name =
          entry.dtype ? safetensors_dtype_name(*entry.dtype) : std::nullopt;
      if (!name) {
        throw FormatError(where + "dtype " +
                          (entry.dtype ? std::string(ckpt::dtype_name(*entry.dtype)) : "(none)") +
                          " has no safetensors dtype");
      }
      dtype_name = *name;
    }
    ranks[i] = dtype_rank(dtype_name);
    if (ranks[i] < 0) {
      throw FormatError(where + "unknown dtype " + in_quotes(dtype_name));
    }
    layout.order.push_back(i);
  }

  // `prepare`: dtype descending in enum order, then name ascending (bytewise).
  std::stable_sort(layout.order.begin(), layout.order.end(), [&](size_t a, size_t b) {
    if (ranks[a] != ranks[b]) {
      return ranks[a] > ranks[b];
    }
    return tensors[a].name < tensors[b].name;
  });

  std::string json = "{";
  if (metadata) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : *metadata) {
      json += first ? "" : ",";
      first = false;
      append_json_string(json, key);
      json += ':';
      append_json_string(json, value);
    }
    json += '}';
  }
  uint64_t offset = 0;
  for (size_t index : layout.order) {
    SafetensorsEntry entry = tensors[index];
    const DtypeInfo& info = k_dtypes[ranks[index]];
    entry.dtype_name = info.name;
    entry.dtype = info.dtype;
    uint64_t size = byte_size(entry, info.bits);
    entry.begin = offset;
    if (__builtin_add_overflow(offset, size, &entry.end)) {
      throw FormatError("tensor " + in_quotes(entry.name) + ": the data buffer passes 2^64 bytes");
    }
    offset = entry.end;
    json += json.size() > 1 ? "," : "";
    append_json_string(json, entry.name);
    json += ":{\"dtype\":\"" + entry.dtype_name + "\",\"shape\":[";
    for (size_t d = 0; d < entry.shape.size(); ++d) {
      json += (d ? "," : "") + std::to_string(entry.shape[d]);
    }
    json += "],\"data_offsets\":[" + std::to_string(entry.begin) + "," +
            std::to_string(entry.end) + "]}";
    layout.tensors.push_back(std::move(entry));
  }
  json += '}';
  json.resize((json.size() + 7) / 8 * 8, ' ');
  if (json.size() > k_safetensors_max_header) {
    throw FormatError("header: " + std::to_string(json.size()) +
                      " bytes, over the reference reader's limit of 100000000");
  }
  layout.data_size = offset;
  layout.header.reserve(k_length_bytes + json.size());
  for (int i = 0; i < 8; ++i) {
    layout.header += static_cast<char>((json.size() >> (8 * i)) & 0xff);
  }
  layout.header += json;
  return layout;
}

KeptName choose_kept_name(const std::vector<SharedName>& group,
                          const std::set<std::string>& preferred,
                          const std::set<std::string>& discard) {
  std::set<std::string> complete;
  std::vector<std::string> all;
  for (const SharedName& shared : group) {
    all.push_back(shared.name);
    if (shared.complete) {
      complete.insert(shared.name);
    }
  }
  std::sort(all.begin(), all.end());
  if (complete.empty() && all.size() == 1) {
    throw FormatError("tensor " + in_quotes(all[0]) +
                      " covers only part of its storage: save_model keeps no such tensor");
  }
  if (complete.empty()) {
    std::string names;
    for (const std::string& name : all) {
      names += (names.empty() ? "" : ", ") + in_quotes(name);
    }
    throw FormatError("tensors " + names +
                      " share storage and none covers all of it: no name to keep");
  }
  KeptName choice;
  choice.kept = *complete.begin();
  for (const std::string& name : complete) {
    if (discard.count(name) == 0) {
      choice.kept = name;
      break;
    }
  }
  for (const std::string& name : complete) {
    if (preferred.count(name) != 0) {
      choice.kept = name;
      break;
    }
  }
  for (const std::string& name : all) {
    if (name != choice.kept) {
      choice.removed.push_back(name);
    }
  }
  return choice;
}

void add_removed_names(std::map<std::string, std::string>& metadata, const KeptName& choice) {
  for (const std::string& name : choice.removed) {
    metadata.emplace(name, choice.kept);
  }
}

}  // namespace ckpt
