// Fuzz target: opening a checkpoint held in memory, zip or legacy (the
// container readers, the pickle decoder with their persistent-id loaders, and
// the tensor checks). Any bytes must give a checkpoint whose storages lie
// inside the input and whose tensors lie inside their storages, or an Error;
// then everything `inspect` reads from it must work.
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "ckpt/checkpoint.h"
#include "ckpt/globals.h"
#include "ckpt/rewrite.h"
#include "ckpt/tensor.h"
#include "ckpt/zip.h"

using namespace ckpt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Checkpoint ckpt;
  try {
    ckpt = read_checkpoint_bytes("fuzz.pth", fuzz::span_of(data, size));
  } catch (const Error&) {
    return 0;
  }
  CKPT_FUZZ_CHECK(ckpt.graph.root != nullptr);
  for (const Storage& storage : ckpt.graph.storages()) {
    if (storage.bytes.data == nullptr) {
      CKPT_FUZZ_CHECK(storage.bytes.size == 0);
      continue;
    }
    CKPT_FUZZ_CHECK(storage.bytes.data >= data && storage.bytes.data <= data + size &&
                    storage.bytes.size <= static_cast<uint64_t>(data + size - storage.bytes.data));
    CKPT_FUZZ_CHECK(storage.bytes.size == static_cast<uint64_t>(storage.numel) *
                                              static_cast<uint64_t>(element_size(storage.dtype)));
    crc32_of(storage.bytes);  // touch every byte
  }
  for (const TensorRef& tensor : ckpt.tensors) {
    CKPT_FUZZ_CHECK(tensor.byte_extent() <= tensor.storage->bytes.size);
  }
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
