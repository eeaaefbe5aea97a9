// Helpers shared by the fuzz targets: the input as a span, a lenient
// persistent-id loader for bare pickles, and the checks that turn a broken
// invariant into a crash libFuzzer records.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "ckpt/checkpoint.h"
#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "ckpt/graph.h"
#include "ckpt/pickle.h"
#include "ckpt/tensor.h"
#include "ckpt/zip.h"

namespace ckpt::fuzz {

inline ByteSpan span_of(const uint8_t* data, size_t size) { return {data, size}; }

inline ByteSpan span_of(const std::string& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

// Aborts (a finding) when `condition` is false: the library broke one of its
// own promises without throwing.
#define CKPT_FUZZ_CHECK(condition)                                                 \
  do {                                                                             \
    if (!(condition)) {                                                            \
      std::fprintf(stderr, "fuzz check failed: %s at %s:%d\n", #condition, __FILE__, \
                   __LINE__);                                                      \
      std::abort();                                                                \
    }                                                                              \
  } while (0)

// Checks what a checkpoint read from `size` bytes at `data` promises: a root,
// storages that lie inside the input and hold exactly their elements, tensors
// inside their storages. Reads every storage byte, so the sanitizer sees any
// overrun.
inline void check_checkpoint(const Checkpoint& ckpt, const uint8_t* data, size_t size) {
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
}

// A persistent-id loader for pickles outside a container: any tuple
// `('storage', type, key, location, numel, …)` becomes a storage (one per
// key) with no bytes, anything else is a FormatError, as the container
// readers do.
class StorageLoader {
public:
  Node* operator()(Graph& graph, Node* id) {
    if (id->kind != NodeKind::k_tuple || id->items.size() < 5 || !id->items[0]->is_str() ||
        id->items[0]->text != "storage") {
      throw FormatError("persistent id is not a storage");
    }
    Node* type = id->items[1];
    Node* key = id->items[2];
    Node* location = id->items[3];
    Node* numel = id->items[4];
    if (type->kind != NodeKind::k_global || !key->is_str() || !location->is_str() ||
        numel->kind != NodeKind::k_int || !numel->text.empty() || numel->integer < 0 ||
        numel->integer > (int64_t{1} << 40)) {
      throw FormatError("malformed storage id");
    }
    auto found = m_by_key.find(key->text.str());
    Storage* storage = nullptr;
    if (found != m_by_key.end()) {
      storage = found->second;
    } else {
      storage = graph.make_storage();
      storage->key = key->text;
      storage->type = type;
      storage->location = location;
      storage->dtype = dtype_of_storage_class(type->name).value_or(Dtype::k_untyped);
      storage->numel = numel->integer;
      m_by_key.emplace(key->text, storage);
    }
    Node* node = graph.make(NodeKind::k_storage);
    node->storage = storage;
    return node;
  }

private:
  std::unordered_map<std::string, Storage*> m_by_key;
};

// Decodes `encoded` (what `encode_pickle` wrote) as the verifier rereads an
// output: storage key `i` stands for a new storage over the bytes of
// `encoded.storages[i]`, typed and located as the persistent id says. Every
// encoder output must decode, and encode again to the same bytes with the
// same storages in the same order; anything else is a finding (the tool would
// fail its own verification, exit 3).
inline void check_round_trip(const EncodedPickle& encoded) {
  Graph again;
  std::unordered_map<std::string, Storage*> by_key;
  std::unordered_map<const Storage*, const Storage*> source_of;
  PersistentLoader load = [&](Graph& graph, Node* id) -> Node* {
    CKPT_FUZZ_CHECK(id->kind == NodeKind::k_tuple && id->items.size() == 5);
    CKPT_FUZZ_CHECK(id->items[2]->is_str() && id->items[4]->kind == NodeKind::k_int);
    const std::string key = id->items[2]->text.str();
    Storage*& storage = by_key[key];
    if (storage == nullptr) {
      size_t index = std::stoul(key);
      CKPT_FUZZ_CHECK(index < encoded.storages.size() && std::to_string(index) == key);
      const Storage* source = encoded.storages[index];
      storage = graph.make_storage();
      storage->key = key;
      storage->type = id->items[1];
      storage->location = id->items[3];
      storage->dtype = source->dtype;
      storage->numel = id->items[4]->integer;
      storage->bytes = source->bytes;
      CKPT_FUZZ_CHECK(storage->numel == source->numel);
      source_of[storage] = source;
    }
    Node* node = graph.make(NodeKind::k_storage);
    node->storage = storage;
    return node;
  };
  Node* root = nullptr;
  try {
    root = decode_pickle(again, span_of(encoded.bytes), load);
  } catch (const FormatError& e) {
    std::fprintf(stderr, "the encoder wrote a pickle the decoder refuses: %s\n", e.what());
    std::abort();
  }
  EncodedPickle reencoded = encode_pickle(root);
  CKPT_FUZZ_CHECK(reencoded.bytes == encoded.bytes);
  CKPT_FUZZ_CHECK(reencoded.storages.size() == encoded.storages.size());
  for (size_t i = 0; i < reencoded.storages.size(); ++i) {
    CKPT_FUZZ_CHECK(source_of[reencoded.storages[i]] == encoded.storages[i]);
  }
}

}  // namespace ckpt::fuzz
