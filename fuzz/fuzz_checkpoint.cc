// Fuzz target: opening a checkpoint held in memory, zip, legacy or
// safetensors (the container readers, the pickle decoder with their
// persistent-id loaders, the safetensors header, and the tensor checks). Any
// bytes must give a checkpoint whose storages lie inside the input and whose
// tensors lie inside their storages, or an Error; then everything `inspect`
// reads from it must work.
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "ckpt/checkpoint.h"
#include "ckpt/globals.h"
#include "ckpt/rewrite.h"
#include "ckpt/tensor.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Checkpoint ckpt;
  try {
    ckpt = read_checkpoint_bytes("fuzz.pth", fuzz::span_of(data, size));
  } catch (const Error&) {
    return 0;
  }
  fuzz::check_checkpoint(ckpt, data, size);
  // What `inspect` reads.
  list_globals(ckpt.graph.root);
  try {
    for (const StateDictRef& ref : find_state_dicts(ckpt.graph.root)) {
      for (const auto& [key, value] : ref.dict->entries) {
        if (std::optional<TensorRef> tensor = as_tensor(value)) {
          tensor->numel();
        }
      }
    }
  } catch (const FormatError&) {
  }
  return 0;
}
