// Fuzz target: the rule-file parser (`--rules FILE`). Any text must give
// rules or an Error; the rules must then apply to keys without failing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common.h"
#include "ckpt/rule_file.h"
#include "ckpt/rules.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  RuleFile file;
  try {
    file = parse_rule_file(std::string_view(reinterpret_cast<const char*>(data), size),
                           "fuzz.toml");
  } catch (const Error&) {
    return 0;
  }
  Rules rules;
  for (const Rule& rule : file.rules) {
    rule.describe();
    rules.add(rule);
  }
  for (const char* key : {"module.conv1.weight", "_orig_mod.module.fc.bias",
                          "layers.0._fsdp_wrapped_module.weight", "", "a..b."}) {
    rules.apply(key);
  }
  return 0;
}
