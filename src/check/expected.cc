// What the model expects, for `check --expect-keys` and `--expect-model`.
//
// The text format is what Python prints for a state dict, so that
//   for k, v in model.state_dict().items(): print(k, list(v.shape), v.dtype)
// writes a valid file; JSON is what json.dump makes of
// {k: list(v.shape) for k, v in model.state_dict().items()}. Every bad line
// is reported at once, each with its line number, as for rule files.
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "ckpt/check.h"
#include "ckpt/error.h"
#include "ckpt/torch_plugin.h"

namespace ckpt {
namespace {

// Reads a shape at `text[at]`: `[8, 3]`, `(8, 3)`, `(8,)`, `[]`, or the same
// inside `torch.Size(...)`. Advances `at`; returns nothing (with `why`) when
// malformed.
std::optional<std::vector<int64_t>> read_shape(const std::string& text, size_t& at,
                                               std::string& why) {
  bool torch_size = text.compare(at, 11, "torch.Size(") == 0;
  if (torch_size) {
    at += 11;
  }
  char open = at < text.size() ? text[at] : '\0';
  char close = open == '[' ? ']' : ')';
  if (open != '[' && open != '(') {
    why = "expected a shape such as [8, 3, 3, 3]";
    return std::nullopt;
  }
  size_t end = text.find(close, at);
  if (end == std::string::npos) {
    why = std::string("the shape has no closing '") + close + "'";
    return std::nullopt;
  }
  std::vector<int64_t> sizes;
  std::vector<std::string> parts;
  std::stringstream inside(text.substr(at + 1, end - at - 1));
  std::string part;
  while (std::getline(inside, part, ',')) {
    size_t b = part.find_first_not_of(" \t");
    parts.push_back(b == std::string::npos ? "" : part.substr(b, part.find_last_not_of(" \t") - b + 1));
  }
  if (parts.size() > 1 && parts.back().empty() && open == '(') {
    parts.pop_back();  // the tuple `(8,)`
  }
  if (parts.size() == 1 && parts[0].empty()) {
    parts.clear();  // `[]`, `()`: a scalar
  }
  for (const std::string& number : parts) {
    if (number.empty() || number.size() > 18 ||
        number.find_first_not_of("0123456789") != std::string::npos) {
      why = number.empty() ? "empty dimension in the shape" : "'" + number + "' is not a dimension";
      return std::nullopt;
    }
    sizes.push_back(std::stoll(number));
  }
  at = end + 1;
  if (torch_size) {
    if (at >= text.size() || text[at] != ')') {
      why = "torch.Size( has no closing ')'";
      return std::nullopt;
    }
    ++at;
  }
  return sizes;
}

ExpectedKeys parse_text(const std::string& name, const std::string& text) {
  ExpectedKeys out;
  out.source = name;
  std::string errors;
  std::set<std::string> seen;
  std::stringstream lines(text);
  std::string line;
  size_t number = 0;
  auto fail = [&](const std::string& why) {
    errors += (errors.empty() ? "" : "\n") + name + ":" + std::to_string(number) + ": " + why;
  };
  while (std::getline(lines, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    size_t at = line.find_first_not_of(" \t");
    if (at == std::string::npos || line[at] == '#') {
      continue;
    }
    size_t key_end = line.find_first_of(" \t", at);
    ExpectedEntry entry;
    entry.key = line.substr(at, key_end == std::string::npos ? std::string::npos : key_end - at);
    at = key_end == std::string::npos ? line.size() : line.find_first_not_of(" \t", key_end);
    if (at != std::string::npos && at < line.size() &&
        (line[at] == '[' || line[at] == '(' || line.compare(at, 11, "torch.Size(") == 0)) {
      std::string why;
      entry.sizes = read_shape(line, at, why);
      if (!entry.sizes) {
        fail("'" + entry.key + "': " + why);
        continue;
      }
      at = line.find_first_not_of(" \t", at);
    }
    if (at != std::string::npos && at < line.size()) {
      size_t end = line.find_first_of(" \t", at);
      std::string word = line.substr(at, end == std::string::npos ? std::string::npos : end - at);
      entry.dtype = dtype_named(word);
      if (!entry.dtype) {
        fail("'" + entry.key + "': " + unknown_dtype(word));
        continue;
      }
      at = end == std::string::npos ? end : line.find_first_not_of(" \t", end);
      if (at != std::string::npos) {
        fail("'" + entry.key + "': unexpected '" + line.substr(at) +
             "' after the dtype (expected: KEY [SHAPE] [DTYPE])");
        continue;
      }
    }
    if (!seen.insert(entry.key).second) {
      fail("key '" + entry.key + "' is listed twice");
      continue;
    }
    out.entries.push_back(std::move(entry));
  }
  if (!errors.empty()) {
    throw Error(errors, ExitStatus::k_usage);
  }
  return out;
}

ExpectedKeys parse_json(const std::string& name, const std::string& text) {
  using json = nlohmann::ordered_json;
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(name + "@" + std::to_string(e.byte) + ": not valid JSON: " + e.what(),
                ExitStatus::k_usage);
  }
  ExpectedKeys out;
  out.source = name;
  std::string errors;
  auto fail = [&](const std::string& why) {
    errors += (errors.empty() ? "" : "\n") + name + ": " + why;
  };
  auto shape_of = [&](const std::string& key, const json& value, ExpectedEntry& entry) {
    if (value.is_null()) {
      return;
    }
    if (!value.is_array()) {
      fail("'" + key + "': the shape must be an array of dimensions or null");
      return;
    }
    std::vector<int64_t> sizes;
    for (const json& dim : value) {
      if (!dim.is_number_unsigned()) {
        fail("'" + key + "': the shape must be an array of dimensions or null");
        return;
      }
      sizes.push_back(dim.get<int64_t>());
    }
    entry.sizes = sizes;
  };
  if (doc.is_array()) {
    for (const json& key : doc) {
      if (!key.is_string()) {
        fail("an array of expected keys must hold only strings");
        continue;
      }
      out.entries.push_back({key.get<std::string>(), std::nullopt, std::nullopt});
    }
  } else if (doc.is_object()) {
    for (const auto& [key, value] : doc.items()) {
      ExpectedEntry entry;
      entry.key = key;
      if (value.is_object()) {
        shape_of(key, value.contains("shape") ? value["shape"] : json(nullptr), entry);
        if (value.contains("dtype") && !value["dtype"].is_null()) {
          std::string word = value["dtype"].is_string() ? value["dtype"].get<std::string>() : "";
          entry.dtype = dtype_named(word);
          if (!entry.dtype) {
            fail("'" + key + "': " + unknown_dtype(word));
          }
        }
      } else {
        shape_of(key, value, entry);
      }
      out.entries.push_back(std::move(entry));
    }
  } else {
    fail("expected a JSON object (key to shape) or an array of keys");
  }
  if (!errors.empty()) {
    throw Error(errors, ExitStatus::k_usage);
  }
  return out;
}

}  // namespace

ExpectedKeys parse_expected_keys(const std::string& name, const std::string& text) {
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (text[first] == '{' || text[first] == '[')) {
    return parse_json(name, text);
  }
  return parse_text(name, text);
}

ExpectedKeys load_expected_keys(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw Error(path + ": cannot read the expected keys: " + std::strerror(errno),
                ExitStatus::k_usage);
  }
  std::stringstream text;
  text << file.rdbuf();
  return parse_expected_keys(path, text.str());
}

ExpectedKeys expected_keys_from_model(const std::string& path) {
  ExpectedKeys out;
  out.source = path;
  for (const ModuleEntry& entry : torchscript_entries(path)) {
    ExpectedEntry expected;
    expected.key = entry.name;
    expected.sizes = entry.sizes;  // not its dtype: load_state_dict casts on copy
    out.entries.push_back(std::move(expected));
  }
  return out;
}

}  // namespace ckpt
