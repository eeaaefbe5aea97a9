// Pickle decoding into an inert object graph, and encoding back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "ckpt/graph.h"

namespace ckpt {

// Bounds that keep a hostile pickle from exhausting memory or time.
struct PickleLimits {
  size_t max_open_marks = 4096;       // MARKs not yet closed
  size_t max_memo_entries = 1 << 24;  // PUT/MEMOIZE entries
  size_t max_int_bytes = 4096;        // LONG4 and text integers
  size_t max_stack = 1 << 24;         // values on the stack at once
  size_t max_nodes = 1 << 24;         // objects in the graph (~200 bytes each)
};

// Turns a persistent id (the object BINPERSID pops, usually a tuple) into the
// node that stands for it. The container supplies this: it knows the records.
using PersistentLoader = std::function<Node*(Graph& graph, Node* persistent_id)>;

// Decodes the pickle at the start of `bytes` into `graph` and returns its
// root. Nothing is executed: globals are names, calls are nodes. Sets
// `*consumed` to the bytes read up to and including STOP. Throws
// `FormatError` with a message that starts with `@<offset>: ` on bad input,
// the offset counted from `report_base` (where `bytes` starts in its file).
Node* decode_pickle(Graph& graph, ByteSpan bytes, const PersistentLoader& load_persistent,
                    uint64_t* consumed = nullptr, uint64_t report_base = 0,
                    const PickleLimits& limits = {});

// Storage keys as the encoder numbers them: in order of first appearance.
struct EncodedPickle {
  std::string bytes;
  std::vector<Storage*> storages;  // index i was written as key `i`
};

// Encodes `root` as protocol 2 with the opcodes torch's weights_only
// unpickler accepts, memoizing as Python's pickle does so that an unchanged
// graph encodes to the bytes Python wrote. Storages are written as
// `('storage', type, key, location, numel)` with keys `0`, `1`, … in order of
// first appearance. Throws `FormatError` for graphs a pickle cannot express
// (recursive tuples, nesting past `max_depth`), and once the output passes
// `max_bytes`: objects Python never memoizes (ints, floats) are written out
// at every use, so a hand-made pickle that refers to one 4 KB integer a
// million times, 1 byte each (DUP), would re-encode to 4 GB. `expected_bytes`
// is reserved up front (the input pickle's size spares a 5 MB pickle a dozen
// copies as it grows).
EncodedPickle encode_pickle(const Node* root, int max_depth = 1000,
                            uint64_t max_bytes = UINT64_MAX, uint64_t expected_bytes = 0);

}  // namespace ckpt
