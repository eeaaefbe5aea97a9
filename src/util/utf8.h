// Well-formed UTF-8, as the readers our outputs meet define it. Internal.
#pragma once

#include <cstddef>
#include <string_view>

namespace ckpt {

// The index of the first byte of `text` that does not start a well-formed
// UTF-8 sequence, or `text.size()` when all do. Well-formed as Rust's
// `str::from_utf8` takes it (the safetensors reader): no overlongs, no
// surrogates, nothing past U+10FFFF. With `surrogates_allowed`, as Python's
// `surrogatepass` decoder takes it (pickle's BINUNICODE, so torch.load): the
// same, but U+D800-U+DFFF encoded in three bytes pass.
size_t first_invalid_utf8(std::string_view text, bool surrogates_allowed = false);

}  // namespace ckpt
