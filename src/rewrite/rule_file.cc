// Rule files in TOML (see rule_file.h for the format). Every problem in a file
// is collected with its line before anything is reported, so a user fixes a
// file in one pass rather than one error per run.
#include "ckpt/rule_file.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ckpt/error.h"
#include "ckpt/spellcheck.h"

namespace ckpt {
namespace {

std::string at(const std::string& name, const toml::source_region& where) {
  return name + ":" + std::to_string(where.begin.line);
}

// toml++ 3.3.0 (Debian 12) reaches __builtin_unreachable() -- undefined
// behaviour -- when it asks whether certain non-ASCII characters are
// whitespace: U+00A1-U+0499, U+2C5E-U+3057 and U+FB26-U+FEFE, bar U+3000
// (marzer/tomlplusplus#190, #295; the fuzz target found it). Such characters
// are refused before toml++ sees them; inside a "string" a \uXXXX escape
// still writes one.
bool toml_misreads(uint32_t code) {
  if (code <= 0xa0 || code >= 0xfeff || code == 0x3000) {
    return false;
  }
  uint32_t block = (code - 0xa0) / 0x3fa;  // as toml++'s generated lookup splits them
  return block == 0 || block == 11 || block == 63;
}

void refuse_toml_misread_characters(std::string_view text, const std::string& name) {
  size_t line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    auto byte = static_cast<uint8_t>(text[i]);
    if (byte == '\n') {
      ++line;
    }
    uint32_t code = 0;
    size_t length = 0;
    if ((byte & 0xe0) == 0xc0) {
      code = byte & 0x1f;
      length = 2;
    } else if ((byte & 0xf0) == 0xe0) {
      code = byte & 0x0f;
      length = 3;
    } else {
      continue;  // ASCII, 4-byte sequences (past U+FFFF) and stray bytes: toml++ copes
    }
    if (i + length > text.size()) {
      return;
    }
    bool well_formed = true;
    for (size_t k = 1; k < length; ++k) {
      auto next = static_cast<uint8_t>(text[i + k]);
      well_formed = well_formed && (next & 0xc0) == 0x80;
      code = (code << 6) | (next & 0x3f);
    }
    if (well_formed && toml_misreads(code)) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "%04X", static_cast<unsigned>(code));
      throw Error(name + ":" + std::to_string(line) + ": character U+" + hex +
                      " is not accepted in rule files (the TOML library mishandles it); "
                      "inside a \"string\" write it as \\u" + hex,
                  ExitStatus::k_usage);
    }
    i += length - 1;
  }
}

class Parser {
public:
  explicit Parser(const std::string& name) : m_name(name) {}

  RuleFile run(std::string_view text) {
    refuse_toml_misread_characters(text, m_name);
    toml::table document;
    try {
      document = toml::parse(text, m_name);
    } catch (const toml::parse_error& e) {
      throw Error(at(m_name, e.source()) + ": " + std::string(e.description()),
                  ExitStatus::k_usage);
    }
    for (const auto& [key, value] : document) {
      if (key == "preset") {
        read_preset(value);
      } else if (key == "rule") {
        read_rules(value);
      } else {
        problem(value.source(), "unknown key '" + std::string(key.str()) +
                                    "' (a rule file holds 'preset' and [[rule]] tables)");
      }
    }
    if (!m_problems.empty()) {
      // TOML tables iterate by key, not by line: report in file order.
      std::stable_sort(m_problems.begin(), m_problems.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      std::string message;
      for (const auto& problem : m_problems) {
        message += (message.empty() ? "" : "\n") + problem.second;
      }
      throw Error(message, ExitStatus::k_usage);
    }
    return std::move(m_file);
  }

private:
  void problem(const toml::source_region& where, const std::string& what) {
    m_problems.emplace_back(where.begin.line, at(m_name, where) + ": " + what);
  }

  void read_preset(const toml::node& value) {
    if (!value.is_string()) {
      problem(value.source(), "'preset' must be a string");
      return;
    }
    std::string preset = **value.as_string();
    try {
      Rules::preset(preset);
      m_file.preset = preset;
    } catch (const Error& e) {
      problem(value.source(), e.what());
    }
  }

  void read_rules(const toml::node& value) {
    const toml::array* rules = value.as_array();
    if (rules == nullptr) {
      problem(value.source(), "'rule' must be an array of tables: write each rule as [[rule]]");
      return;
    }
    for (const toml::node& rule : *rules) {
      const toml::table* table = rule.as_table();
      if (table == nullptr) {
        problem(rule.source(), "each rule must be a table: write each rule as [[rule]]");
      } else if (table->size() != 1) {
        std::string kinds;
        for (const auto& entry : *table) {
          kinds += (kinds.empty() ? "" : ", ") + std::string(entry.first.str());
        }
        problem(rule.source(), "a [[rule]] holds exactly one rule, found " +
                                   std::to_string(table->size()) + ": " + kinds);
      } else {
        read_rule(table->begin()->first.str(), table->begin()->second);
      }
    }
  }

  void read_rule(std::string_view kind_name, const toml::node& value) {
    std::string name(kind_name);
    std::optional<RuleKind> kind = rule_kind_named(name);
    if (!kind) {
      std::string what = "unknown rule kind '" + name + "'";
      if (std::optional<std::string> hint = closest_match(name, rule_kind_names())) {
        what += ", did you mean '" + *hint + "'?";
      }
      problem(value.source(), what);
      return;
    }
    std::vector<std::string> args;
    size_t arity = rule_arity(*kind);
    if (arity == 1 && value.is_string()) {
      args.push_back(**value.as_string());
    } else if (arity == 2 && value.is_array() && value.as_array()->size() == 2 &&
               value.as_array()->is_homogeneous(toml::node_type::string)) {
      for (const toml::node& item : *value.as_array()) {
        args.push_back(**item.as_string());
      }
    } else {
      problem(value.source(), "'" + name + "' takes " +
                                  (arity == 1 ? std::string("a string")
                                              : std::string("two strings, [\"A\", \"B\"]")));
      return;
    }
    try {
      m_file.rules.push_back(make_rule(*kind, std::move(args), at(m_name, value.source())));
    } catch (const Error& e) {
      m_problems.emplace_back(value.source().begin.line, e.what());
    }
  }

  const std::string& m_name;
  RuleFile m_file;
  std::vector<std::pair<toml::source_index, std::string>> m_problems;  // line, message
};

}  // namespace

RuleFile parse_rule_file(std::string_view text, const std::string& name) {
  return Parser(name).run(text);
}

RuleFile load_rule_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(path + ": cannot read rule file: " + std::strerror(errno), ExitStatus::k_usage);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_rule_file(text.str(), path);
}

}  // namespace ckpt
