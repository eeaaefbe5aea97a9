// A second implementation of the dtype casts, for verification only: what
// each element should become, computed another way than the writer's
// (cast.h) so that a bug in one is caught by the other. Internal to the
// verifiers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ckpt/dtype.h"

namespace ckpt {

// Checks that `written` (`count` elements of `to`) is `source` (`count`
// elements of `from`) cast as cast.h documents: finite values, ±inf, ±0 and
// subnormals rounded to nearest even (float64 → 16 bits through float32, as
// torch does), NaN as the documented NaN when narrowing and any NaN when
// widening. Returns the index of the first element that differs, or `count`.
size_t first_cast_difference(Dtype from, Dtype to, const uint8_t* source, const uint8_t* written,
                             size_t count);

}  // namespace ckpt
