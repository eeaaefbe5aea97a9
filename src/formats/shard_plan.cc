// This file implements the pure half of writing a HuggingFace sharded
// checkpoint: reading `max_shard_size`, splitting a state dict into shards,
// naming the files, writing the index JSON, and finding the files a new write
// would leave stale.
//
// Each piece reproduces the Python that loaders and users compare against, so
// a checkpoint sharded here is the one `save_pretrained` would have written:
// the split is huggingface_hub's first-fit in order (no packing, oversize
// tensors alone, shared storages counted once), and the index is written by
// hand because Python's `json.dumps(indent=2, sort_keys=True)` differs from
// nlohmann's dump in spacing (`": "`, a bare `{}` when empty) and escaping
// (`ensure_ascii`: every non-ASCII code point as `\uXXXX`, lowercase hex,
// DEL included). The size parser accepts what huggingface_hub's
// `parse_size_to_int` accepts, with its float arithmetic, and adds the binary
// units and plain byte counts that older transformers and accelerate took.
#include "ckpt/shard_plan.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <unordered_map>

#include "ckpt/error.h"

namespace ckpt {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view k_accepted =
    "expected a whole number of bytes, or a number and a unit: KB, MB, GB, TB (powers of 1000) "
    "or KiB, MiB, GiB, TiB (powers of 1024), such as 5GB, 1.5GB or 512MiB";

// 2^63 as a double: the first size refused.
constexpr double k_size_limit = 9223372036854775808.0;

struct SizeUnit {
  std::string_view name;
  double multiplier;
  std::string_view bits_name;  // what a capital prefix before a small `b` means
};

// The binary units first: `KiB` must not be read as `B` after `Ki`.
constexpr std::array<SizeUnit, 8> k_units = {{
    {"KiB", 1024.0, ""},
    {"MiB", 1048576.0, ""},
    {"GiB", 1073741824.0, ""},
    {"TiB", 1099511627776.0, ""},
    {"KB", 1e3, "kilobits"},
    {"MB", 1e6, "megabits"},
    {"GB", 1e9, "gigabits"},
    {"TB", 1e12, "terabits"},
}};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char to_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_space(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

bool ends_with_nocase(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) {
    return false;
  }
  std::string_view tail = text.substr(text.size() - suffix.size());
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (to_upper(tail[i]) != to_upper(suffix[i])) {
      return false;
    }
  }
  return true;
}

bool equals_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ends_with_nocase(a, b);
}

// Python's float() spellings of NaN and infinity, with an optional sign.
bool is_non_finite(std::string_view number) {
  if (!number.empty() && (number.front() == '+' || number.front() == '-')) {
    number.remove_prefix(1);
  }
  return equals_nocase(number, "nan") || equals_nocase(number, "inf") ||
         equals_nocase(number, "infinity");
}

// The magnitude `is_decimal` gives a number whose digits are all 0.
constexpr long k_zero = LONG_MIN;

// Whether `number` is a decimal number as Python's float() takes it, without
// sign or underscores: digits with an optional fraction (one digit at least),
// then an optional exponent. Sets `magnitude` to the power of ten of its first
// significant digit plus one (1 for 1..9.99, 0 for 0.1..0.999), or to `k_zero`.
bool is_decimal(std::string_view number, long& magnitude) {
  size_t i = 0;
  size_t int_digits = 0;
  size_t digits = 0;
  long first_significant = -1;  // index among the mantissa's digits
  auto digit = [&] {
    if (first_significant < 0 && number[i] != '0') {
      first_significant = static_cast<long>(digits);
    }
    ++digits;
    ++i;
  };
  while (i < number.size() && is_digit(number[i])) {
    digit();
  }
  int_digits = digits;
  if (i < number.size() && number[i] == '.') {
    ++i;
    while (i < number.size() && is_digit(number[i])) {
      digit();
    }
  }
  if (digits == 0) {
    return false;
  }
  long exponent = 0;
  if (i < number.size() && (number[i] == 'e' || number[i] == 'E')) {
    ++i;
    bool negative = false;
    if (i < number.size() && (number[i] == '+' || number[i] == '-')) {
      negative = number[i] == '-';
      ++i;
    }
    if (i == number.size()) {
      return false;
    }
    while (i < number.size() && is_digit(number[i])) {
      exponent = std::min(exponent * 10 + (number[i] - '0'), 1'000'000L);
      ++i;
    }
    exponent = negative ? -exponent : exponent;
  }
  if (i != number.size()) {
    return false;
  }
  magnitude = first_significant < 0
                  ? k_zero
                  : static_cast<long>(int_digits) - first_significant + exponent;
  return true;
}

Error size_error(std::string_view text, const std::string& why) {
  return Error("shard size '" + std::string(text) + "': " + why + " (" + std::string(k_accepted) +
                   ")",
               ExitStatus::k_usage);
}

// The error for `number` followed by `unit`, which is no unit known here.
Error unknown_unit(std::string_view text, std::string_view number, std::string_view unit) {
  std::string why = "unknown unit '" + std::string(unit) + "'";
  std::string upper;
  for (char c : unit) {
    upper += to_upper(c);
  }
  std::string guess;
  if (upper == "K" || upper == "M" || upper == "G" || upper == "T") {
    guess = upper + "B";
  } else if (upper == "KI" || upper == "MI" || upper == "GI" || upper == "TI") {
    guess = upper.substr(0, 1) + "iB";
  }
  if (!guess.empty()) {
    why += ", did you mean '" + std::string(number) + guess + "'?";
  }
  return size_error(text, why);
}

// Appends `text` to `out` as Python's `json.dumps` writes a str with
// `ensure_ascii=True`. `what` names the string in the error for bad UTF-8.
void append_python_string(std::string& out, std::string_view text, const std::string& what) {
  auto bad = [&](size_t at) {
    return FormatError(what + ": not UTF-8 (byte " + std::to_string(at) + ")");
  };
  auto hex4 = [&](uint32_t unit) {
    char buffer[8];
    std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(unit));
    out += buffer;
  };
  out += '"';
  for (size_t i = 0; i < text.size();) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      switch (byte) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (byte < 0x20 || byte == 0x7f) {
            hex4(byte);
          } else {
            out += static_cast<char>(byte);
          }
      }
      ++i;
      continue;
    }
    size_t length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 0;
    if (length == 0 || byte > 0xf4 || i + length > text.size()) {
      throw bad(i);
    }
    uint32_t code = byte & (0x7f >> length);
    for (size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) {
        throw bad(i);
      }
      code = (code << 6) | (next & 0x3f);
    }
    constexpr std::array<uint32_t, 5> k_smallest = {0, 0, 0x80, 0x800, 0x10000};
    if (code < k_smallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      throw bad(i);
    }
    if (code >= 0x10000) {
      code -= 0x10000;
      hex4(0xd800 + (code >> 10));
      hex4(0xdc00 + (code & 0x3ff));
    } else {
      hex4(code);
    }
    i += length;
  }
  out += '"';
}

// Key, value already as JSON text.
using JsonEntries = std::vector<std::pair<std::string, std::string>>;

// Appends `entries` as Python's indent=2 dump of a dict `depth` levels deep
// writes it, sorted by key; `what` names the object in the error for a key
// that is not UTF-8.
void append_python_object(std::string& out, JsonEntries entries, int depth,
                          const std::string& what) {
  if (entries.empty()) {
    out += "{}";
    return;
  }
  std::sort(entries.begin(), entries.end());
  std::string indent(static_cast<size_t>(2 * (depth + 1)), ' ');
  out += "{";
  for (size_t i = 0; i < entries.size(); ++i) {
    out += i == 0 ? "\n" : ",\n";
    out += indent;
    append_python_string(out, entries[i].first, what + " key '" + entries[i].first + "'");
    out += ": ";
    out += entries[i].second;
  }
  out += "\n" + std::string(static_cast<size_t>(2 * depth), ' ') + "}";
}

std::string python_string(std::string_view text, const std::string& what) {
  std::string out;
  append_python_string(out, text, what);
  return out;
}

std::string_view shard_stem(ShardFormat format) {
  return format == ShardFormat::k_safetensors ? "model" : "pytorch_model";
}

std::string_view shard_extension(ShardFormat format) {
  return format == ShardFormat::k_safetensors ? ".safetensors" : ".bin";
}

// Whether `name` is `<stem>-NNNNN-of-NNNNN<extension>`.
bool is_shard_name(std::string_view name, ShardFormat format) {
  std::string_view stem = shard_stem(format);
  std::string_view extension = shard_extension(format);
  constexpr std::string_view k_middle = "-00000-of-00000";
  if (name.size() != stem.size() + k_middle.size() + extension.size() ||
      name.substr(0, stem.size()) != stem ||
      name.substr(name.size() - extension.size()) != extension) {
    return false;
  }
  std::string_view middle = name.substr(stem.size(), k_middle.size());
  for (size_t i = 0; i < k_middle.size(); ++i) {
    bool ok = k_middle[i] == '0' ? is_digit(middle[i]) : middle[i] == k_middle[i];
    if (!ok) {
      return false;
    }
  }
  return true;
}

}  // namespace

uint64_t parse_shard_size(std::string_view text) {
  std::string_view size = trim(text);
  if (size.empty()) {
    throw size_error(text, "empty");
  }
  if (size.front() == '-') {
    throw size_error(text, "negative");
  }
  if (std::all_of(size.begin(), size.end(), is_digit)) {
    uint64_t bytes = 0;
    for (char c : size) {
      if (bytes > (static_cast<uint64_t>(INT64_MAX) - static_cast<uint64_t>(c - '0')) / 10) {
        throw size_error(text, "2^63 bytes or more");
      }
      bytes = bytes * 10 + static_cast<uint64_t>(c - '0');
    }
    if (bytes == 0) {
      throw size_error(text, "zero bytes");
    }
    return bytes;
  }
  const SizeUnit* unit = nullptr;
  for (const SizeUnit& candidate : k_units) {
    if (ends_with_nocase(size, candidate.name)) {
      unit = &candidate;
      break;
    }
  }
  if (unit == nullptr) {
    if (is_non_finite(size)) {
      throw size_error(text, "not a finite number");
    }
    size_t letters = size.size();
    while (letters > 0 && is_alpha(size[letters - 1])) {
      --letters;
    }
    std::string_view number = trim(size.substr(0, letters));
    long magnitude = 0;
    if (letters == size.size()) {
      throw size_error(text, is_decimal(size, magnitude) ? "no unit, and bytes are counted whole"
                                                         : "not a number");
    }
    if (letters == 0) {
      throw size_error(text, "no number");
    }
    throw unknown_unit(text, number, size.substr(letters));
  }
  std::string_view unit_text = size.substr(size.size() - unit->name.size());
  if (!unit->bits_name.empty() && unit_text[0] >= 'A' && unit_text[0] <= 'Z' &&
      unit_text[1] == 'b') {
    throw size_error(text, "'" + std::string(unit_text) + "' is " + std::string(unit->bits_name) +
                               "; write '" + std::string(unit->name) + "' for bytes");
  }
  std::string_view number = trim(size.substr(0, size.size() - unit->name.size()));
  if (number.empty()) {
    throw size_error(text, "no number before '" + std::string(unit_text) + "'");
  }
  if (is_non_finite(number)) {
    throw size_error(text, "not a finite number");
  }
  if (number.front() == '+') {
    number.remove_prefix(1);  // Python's float() takes it
  }
  long magnitude = 0;
  if (!is_decimal(number, magnitude)) {
    throw size_error(text, "'" + std::string(number) + "' is not a number");
  }
  double value = 0;
  const char* end = number.data() + number.size();
  std::from_chars_result parsed = std::from_chars(number.data(), end, value);
  if (parsed.ec == std::errc::result_out_of_range) {
    // Past a double's range: huge, or so small it is no byte.
    value = magnitude > 0 ? k_size_limit : 0.0;
  } else if (parsed.ec != std::errc() || parsed.ptr != end) {
    throw size_error(text, "'" + std::string(number) + "' is not a number");
  }
  // As Python's int(float(number) * multiplier): one rounding, then truncation.
  double bytes = value * unit->multiplier;
  if (bytes >= k_size_limit) {
    throw size_error(text, "2^63 bytes or more");
  }
  if (bytes < 1.0) {
    throw size_error(text, magnitude == k_zero ? "zero bytes" : "less than one byte");
  }
  return static_cast<uint64_t>(bytes);
}

ShardPlan plan_shards(const std::vector<ShardItem>& items, uint64_t max_shard_size) {
  constexpr size_t k_none = static_cast<size_t>(-1);
  ShardPlan plan;
  std::unordered_map<uint64_t, size_t> first_with_storage;  // storage id → item index
  std::vector<size_t> shared;  // items whose storage an earlier item holds
  std::vector<size_t> current;
  uint64_t current_size = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const ShardItem& item = items[i];
    if (!first_with_storage.emplace(item.storage_id, i).second) {
      shared.push_back(i);
      continue;
    }
    if (item.bytes > UINT64_MAX - plan.total_size) {
      throw FormatError("tensor '" + item.name +
                        "': the state dict's total size is over 2^64 - 1 bytes");
    }
    plan.total_size += item.bytes;
    if (item.bytes > max_shard_size) {
      plan.shards.push_back({i});
      continue;
    }
    // current_size <= max_shard_size, so this is current_size + bytes > max without overflow.
    if (item.bytes > max_shard_size - current_size) {
      plan.shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += item.bytes;
  }
  if (!current.empty()) {
    plan.shards.push_back(std::move(current));
  }
  if (!shared.empty()) {
    std::vector<size_t> shard_of(items.size(), k_none);
    for (size_t s = 0; s < plan.shards.size(); ++s) {
      for (size_t i : plan.shards[s]) {
        shard_of[i] = s;
      }
    }
    for (size_t i : shared) {
      plan.shards[shard_of[first_with_storage.at(items[i].storage_id)]].push_back(i);
    }
    for (std::vector<size_t>& shard : plan.shards) {
      std::sort(shard.begin(), shard.end());
    }
  }
  return plan;
}

std::string shard_file_name(ShardFormat format, size_t index, size_t count) {
  if (count > k_max_shard_count) {
    throw Error(std::to_string(count) + " shards: the file names number " +
                    std::to_string(k_max_shard_count) + " at most; choose a larger shard size",
                ExitStatus::k_usage);
  }
  if (index >= count) {
    throw std::out_of_range("shard_file_name: shard " + std::to_string(index) + " of " +
                            std::to_string(count));
  }
  std::string name(shard_stem(format));
  if (count > 1) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", index + 1, count);
    name += suffix;
  }
  return name + std::string(shard_extension(format));
}

std::string index_file_name(ShardFormat format) {
  return std::string(shard_stem(format)) + std::string(shard_extension(format)) + ".index.json";
}

std::string hf_index_json(uint64_t total_size,
                          const std::vector<std::pair<std::string, std::string>>& weight_map,
                          const std::map<std::string, std::string>& extra_metadata) {
  JsonEntries metadata;
  metadata.emplace_back("total_size", std::to_string(total_size));
  for (const auto& [key, value] : extra_metadata) {
    if (key == "total_size") {
      throw FormatError("index metadata: 'total_size' is the index's own key");
    }
    metadata.emplace_back(key, python_string(value, "index metadata '" + key + "'"));
  }
  JsonEntries files;
  files.reserve(weight_map.size());
  for (const auto& [name, file] : weight_map) {
    files.emplace_back(name, python_string(file, "weight map: tensor '" + name + "'"));
  }
  std::sort(files.begin(), files.end());
  for (size_t i = 1; i < files.size(); ++i) {
    if (files[i].first == files[i - 1].first) {
      throw FormatError("weight map: tensor '" + files[i].first + "' appears twice");
    }
  }
  std::string metadata_text;
  append_python_object(metadata_text, std::move(metadata), 1, "index metadata");
  std::string files_text;
  append_python_object(files_text, std::move(files), 1, "weight map");
  std::string out;
  append_python_object(out, {{"metadata", metadata_text}, {"weight_map", files_text}}, 0, "index");
  return out + "\n";
}

std::vector<std::string> stale_shard_files(const std::string& folder, ShardFormat format) {
  std::error_code error;
  if (fs::status(folder, error).type() == fs::file_type::not_found) {
    return {};
  }
  std::string single = shard_file_name(format, 0, 1);
  std::string index = index_file_name(format);
  std::vector<std::string> names;
  fs::directory_iterator it(folder, error);
  for (; !error && it != fs::directory_iterator(); it.increment(error)) {
    std::string name = it->path().filename().string();
    std::error_code ignored;
    if ((name == single || name == index || is_shard_name(name, format)) &&
        !it->is_directory(ignored)) {
      names.push_back(std::move(name));
    }
  }
  if (error) {
    throw Error(folder + ": cannot list the folder: " + error.message());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace ckpt
