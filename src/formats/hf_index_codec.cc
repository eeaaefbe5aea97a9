// This file implements the parser of HuggingFace shard indexes
// (hf_index.h): the JSON read through nlohmann's SAX interface, so that no
// DOM of a large `weight_map` is built, a tensor named twice is seen (a DOM
// keeps one of them silently), and nesting is bounded. It keeps only what the
// reader needs: `weight_map` in order and `metadata.total_size`. The shard
// names are checked as huggingface_hub's `_load_sharded_checkpoint` checks
// them (absolute, drive or UNC prefix, `..`, an extension other than the
// index's, all judged as Windows paths too), before any file is opened.
#include "ckpt/hf_index.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <string_view>
#include <unordered_set>

#include "ckpt/error.h"

namespace ckpt {
namespace {

constexpr int k_max_depth = 128;
constexpr std::string_view k_safetensors_ext = ".safetensors";
constexpr std::string_view k_bin_ext = ".bin";

bool ends_with(std::string_view text, std::string_view end) {
  return text.size() >= end.size() && text.substr(text.size() - end.size()) == end;
}


const char* format_name(HfShardFormat format) {
  return format == HfShardFormat::k_safetensors ? "safetensors" : "bin";
}

std::optional<HfShardFormat> format_of_extension(std::string_view shard) {
  if (ends_with(shard, k_safetensors_ext)) {
    return HfShardFormat::k_safetensors;
  }
  if (ends_with(shard, k_bin_ext)) {
    return HfShardFormat::k_bin;
  }
  return std::nullopt;
}

// Why `shard` is no plain name inside the index's folder, or "" when it is.
std::string shard_name_problem(std::string_view shard) {
  if (shard.empty()) {
    return "is empty";
  }
  if (shard.find('\0') != std::string_view::npos) {
    return "holds a NUL byte";
  }
  auto slash = [](char c) { return c == '/' || c == '\\'; };
  if (shard.size() >= 2 && slash(shard[0]) && slash(shard[1])) {
    return "has a UNC prefix: it leaves the index's folder";
  }
  if (slash(shard[0])) {
    return "is an absolute path: it leaves the index's folder";
  }
  if (shard.size() >= 2 && std::isalpha(static_cast<unsigned char>(shard[0])) && shard[1] == ':') {
    return "has a drive prefix: it leaves the index's folder";
  }
  size_t start = 0;
  while (start <= shard.size()) {
    size_t end = start;
    while (end < shard.size() && !slash(shard[end])) {
      ++end;
    }
    if (shard.substr(start, end - start) == "..") {
      return "has a '..' component: it leaves the index's folder";
    }
    start = end + 1;
  }
  return "";
}

// Reads the index through SAX events, keeping `weight_map` and
// `metadata.total_size`. A callback that returns false stops the parse with
// `error` set.
class IndexReader : public nlohmann::json_sax<nlohmann::json> {
public:
  HfIndex index;
  bool saw_weight_map = false;
  std::string error;
  uint64_t error_byte = 0;
  bool syntax = false;

  bool null() override { return value("null"); }
  bool boolean(bool) override { return value("a boolean"); }
  bool number_integer(number_integer_t) override {
    if (in_total_size()) {
      index.total_size_unusable = true;
    }
    return value("a number");
  }
  bool number_unsigned(number_unsigned_t number) override {
    if (in_total_size()) {
      index.total_size = number;
    }
    return value("a number");
  }
  bool number_float(number_float_t, const string_t&) override {
    if (in_total_size()) {
      index.total_size_unusable = true;
    }
    return value("a number");
  }
  bool string(string_t& text) override {
    if (m_depth == 2 && m_section == Section::k_weight_map) {
      index.weight_map.emplace_back(std::move(m_key), std::move(text));
      return true;
    }
    return value("a string");
  }
  bool binary(binary_t&) override { return value("binary"); }
  bool start_object(std::size_t) override { return open("an object"); }
  bool start_array(std::size_t) override { return open("a list"); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& text) override {
    if (m_depth == 1) {
      m_section = text == "weight_map" ? Section::k_weight_map
                  : text == "metadata" ? Section::k_metadata
                                       : Section::k_other;
      if (m_section != Section::k_other && !m_top_keys.insert(text).second) {
        return fail(text + " appears twice");
      }
    } else if (m_depth == 2 && m_section == Section::k_weight_map) {
      if (!m_tensors.insert(text).second) {
        return fail("weight_map: tensor " + quoted_name(text) + " is listed twice");
      }
    }
    m_key = std::move(text);
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // "[json.exception.parse_error.101] parse error at line 1, column 3: syntax
    // error while parsing …": keep what follows the line and column.
    std::string what = ex.what();
    size_t column = what.find("column ");
    size_t colon = column == std::string::npos ? std::string::npos : what.find(": ", column);
    error = "not valid JSON: " + (colon == std::string::npos ? what : what.substr(colon + 2));
    error_byte = position == 0 ? 0 : position - 1;
    syntax = true;
    return false;
  }

private:
  enum class Section { k_other, k_weight_map, k_metadata };

  bool in_total_size() const {
    return m_depth == 2 && m_section == Section::k_metadata && m_key == "total_size";
  }

  bool fail(std::string why) {
    error = std::move(why);
    return false;
  }

  // A scalar at the current place: refused where an object or a shard name
  // must be.
  bool value(const char* kind) {
    if (m_depth == 0) {
      return fail(std::string("an HF index is a JSON object, not ") + kind);
    }
    if (m_depth == 1 && m_section == Section::k_weight_map) {
      return fail(std::string("weight_map is ") + kind +
                  ", not an object of tensor names to shard files");
    }
    if (m_depth == 1 && m_section == Section::k_metadata) {
      return fail(std::string("metadata is ") + kind + ", not an object");
    }
    if (m_depth == 2 && m_section == Section::k_weight_map) {
      return fail("weight_map: tensor " + quoted_name(m_key) + ": its shard is " + kind +
                  ", not a file name");
    }
    return true;
  }

  bool open(const char* kind) {
    if (m_depth == 0 && std::string_view(kind) != "an object") {
      return value(kind);
    }
    if (m_depth == 1 && m_section == Section::k_weight_map) {
      if (std::string_view(kind) != "an object") {
        return value(kind);
      }
      saw_weight_map = true;
    } else if (m_depth == 1 && m_section == Section::k_metadata) {
      if (std::string_view(kind) != "an object") {
        return value(kind);
      }
    } else if (m_depth == 2 && (m_section == Section::k_weight_map || in_total_size())) {
      if (m_section == Section::k_metadata) {
        index.total_size_unusable = true;
      } else {
        return value(kind);
      }
    }
    if (++m_depth > k_max_depth) {
      return fail("JSON nested deeper than " + std::to_string(k_max_depth) + " levels");
    }
    return true;
  }

  bool close() {
    --m_depth;
    return true;
  }

  int m_depth = 0;
  Section m_section = Section::k_other;
  std::string m_key;
  std::unordered_set<std::string> m_top_keys;
  std::unordered_set<std::string> m_tensors;
};

// `<stem>-<5 digits>-of-<5 digits><ext>`: the stem and the extension, or none.
std::optional<std::pair<std::string_view, std::string_view>> shard_pattern(std::string_view name) {
  size_t of = name.rfind("-of-");
  if (of == std::string_view::npos || of < 6 || name.size() < of + 4 + 5) {
    return std::nullopt;
  }
  auto digits = [&](size_t at) {
    for (size_t i = at; i < at + 5; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(name[i]))) {
        return false;
      }
    }
    return true;
  };
  if (name[of - 6] != '-' || !digits(of - 5) || !digits(of + 4)) {
    return std::nullopt;
  }
  std::string_view ext = name.substr(of + 9);
  if (ext.empty() || ext[0] != '.') {
    return std::nullopt;
  }
  return std::pair{name.substr(0, of - 6), ext};
}

}  // namespace

std::string quoted_name(std::string_view text, bool escape_non_ascii) {
  std::string out = "'";
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || (escape_non_ascii && byte >= 0x80)) {
      static const char k_hex[] = "0123456789abcdef";
      out += {'\\', 'x', k_hex[byte >> 4], k_hex[byte & 15]};
    } else {
      out += c;
    }
  }
  return out + "'";
}

bool looks_like_hf_index(ByteSpan head) {
  std::string_view text(reinterpret_cast<const char*>(head.data),
                        head.size < k_hf_index_max_bytes ? head.size : k_hf_index_max_bytes);
  size_t at = text.find_first_not_of(" \t\r\n");
  if (at == std::string_view::npos || text[at] != '{') {
    return false;
  }
  at = text.find_first_not_of(" \t\r\n", at + 1);
  if (at == std::string_view::npos || text[at] != '"') {
    return false;
  }
  return text.find("\"weight_map\"") != std::string_view::npos;
}

std::optional<HfShardFormat> hf_index_format_of_name(std::string_view name) {
  size_t slash = name.find_last_of('/');
  std::string_view file = slash == std::string_view::npos ? name : name.substr(slash + 1);
  if (!ends_with(file, ".json")) {
    return std::nullopt;
  }
  if (file.find(".safetensors.index") != std::string_view::npos) {
    return HfShardFormat::k_safetensors;
  }
  if (file.find(".bin.index") != std::string_view::npos) {
    return HfShardFormat::k_bin;
  }
  return std::nullopt;
}

HfIndex parse_hf_index(ByteSpan bytes, const std::string& name) {
  if (bytes.size > k_hf_index_max_bytes) {
    throw Error(name + ": the index is " + std::to_string(bytes.size) + " bytes, over the " +
                std::to_string(k_hf_index_max_bytes >> 20) + " MiB an HF index may have");
  }
  IndexReader reader;
  const char* text = reinterpret_cast<const char*>(bytes.data);
  bool parsed = nlohmann::json::sax_parse(text, text + bytes.size, &reader,
                                          nlohmann::json::input_format_t::json, true);
  if (!parsed) {
    throw Error((reader.syntax ? name + "@" + std::to_string(reader.error_byte) : name) + ": " +
                reader.error);
  }
  HfIndex& index = reader.index;
  if (!reader.saw_weight_map) {
    throw Error(name + ": no weight_map: an HF index maps each tensor to its shard file in one");
  }
  if (index.weight_map.empty()) {
    throw Error(name + ": weight_map lists no tensors");
  }
  std::optional<HfShardFormat> format = hf_index_format_of_name(name);
  std::unordered_set<std::string_view> seen;
  for (const auto& [tensor, shard] : index.weight_map) {
    std::string where = name + ": weight_map: tensor " + quoted_name(tensor) + ": shard " +
                        quoted_name(shard);
    std::string problem = shard_name_problem(shard);
    if (!problem.empty()) {
      throw Error(where + " " + problem);
    }
    std::optional<HfShardFormat> shard_format = format_of_extension(shard);
    if (!shard_format) {
      throw Error(where + " is neither a .safetensors nor a .bin file");
    }
    if (!format) {
      format = shard_format;
    }
    if (*shard_format != *format) {
      throw Error(where + " is a ." + format_name(*shard_format) + " file in an index of ." +
                  format_name(*format) + " shards");
    }
    if (seen.insert(shard).second) {
      index.shards.push_back(shard);
    }
  }
  index.format = *format;
  return index;
}

bool is_hf_shard_like(std::string_view file, std::string_view shard) {
  auto a = shard_pattern(file);
  auto b = shard_pattern(shard);
  return a && b && *a == *b;
}

}  // namespace ckpt
