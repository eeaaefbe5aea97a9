// The "did you mean" hint for unknown names (ninja's spellcheck in
// util.h): preset, rule kind, dtype and subcommand names all use it.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ckpt {

// The closest of `candidates` to `word` within a small edit distance, for
// "did you mean" hints.
std::optional<std::string> closest_match(const std::string& word,
                                         const std::vector<std::string>& candidates);

}  // namespace ckpt
