// The storage persistent ids of torch pickles, shared by both torch readers:
// `('storage', type, key, location, numel)` in a zip archive's data.pkl, with
// a sixth field (a view, always None since torch 0.4) in the legacy stream.
// Each is checked before a `Storage` is made for it, and a key seen twice
// must name the same storage.
#include "formats/torch_storage_id.h"

#include <optional>

namespace ckpt {

StorageId parse_storage_id(Node* const* fields) {
  StorageId id;
  id.type = fields[0];
  Node* key = fields[1];
  id.location = fields[2];
  Node* numel = fields[3];
  if (id.type->kind != NodeKind::k_global || id.type->text != "torch") {
    throw FormatError("storage type is not a torch storage class");
  }
  std::optional<Dtype> dtype = dtype_of_storage_class(id.type->name);
  if (!dtype) {
    throw FormatError("unknown storage class torch." + id.type->name);
  }
  id.dtype = *dtype;
  if (key->kind != NodeKind::k_str && key->kind != NodeKind::k_int) {
    throw FormatError("storage key is not a str");
  }
  id.key = key->is_str() ? key->text.str() : std::to_string(key->integer);
  if (!id.location->is_str()) {
    throw FormatError("storage location is not a str");
  }
  if (numel->kind != NodeKind::k_int || !numel->text.empty() || numel->integer < 0 ||
      numel->integer > (int64_t{1} << 56)) {
    throw FormatError("storage '" + id.key + "' has an invalid element count");
  }
  id.numel = numel->integer;
  return id;
}

Storage* storage_for(Graph& graph, const StorageId& id, Storage* known) {
  if (known != nullptr) {
    if (known->dtype != id.dtype || known->numel != id.numel) {
      throw FormatError("storage '" + id.key + "' is declared twice with different types");
    }
    return known;
  }
  Storage* storage = graph.make_storage();
  storage->key = id.key;
  storage->type = id.type;
  storage->location = id.location;
  storage->dtype = id.dtype;
  storage->numel = id.numel;
  return storage;
}

Node* const* storage_id_fields(const Node* id, size_t field_count) {
  if (id->kind != NodeKind::k_tuple || id->items.empty()) {
    throw FormatError("persistent id is not a tuple");
  }
  Node* tag = id->items[0];
  bool is_storage = (tag->is_str() || tag->kind == NodeKind::k_bytes) && tag->text == "storage";
  if (!is_storage) {
    throw FormatError("persistent id of unknown kind (only storages are allowed)");
  }
  if (id->items.size() != field_count + 1) {
    throw FormatError("storage persistent id has " + std::to_string(id->items.size()) +
                      " fields, expected " + std::to_string(field_count + 1));
  }
  return id->items.data() + 1;
}

Node* storage_node(Graph& graph, Storage* storage) {
  Node* node = graph.make(NodeKind::k_storage);
  node->storage = storage;
  return node;
}

}  // namespace ckpt
