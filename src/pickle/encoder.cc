// This file implements the pickle encoder: protocol 2, written the way
// CPython's `pickle._Pickler` writes it.
//
// Matching CPython opcode for opcode matters twice: torch's weights_only
// unpickler accepts only a small opcode set (torch/_weights_only_unpickler.py
// defines it; docs/architecture.md, "The pipeline"), and a graph decoded from
// a torch.save file and left unchanged encodes back to the very same bytes,
// which the tests check. So the memo follows CPython: strings,
// tuples, lists, dicts, globals and call results are memoized when first
// written (globals by name, since Python memoizes the one class object), and
// persistent ids are written afresh each time, as torch.save's
// `persistent_id` returns a new tuple per tensor.
#include <algorithm>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "ckpt/error.h"
#include "ckpt/pickle.h"

namespace ckpt {
namespace {

constexpr size_t k_batch_size = 1000;  // CPython's _BATCHSIZE

class Encoder {
public:
  Encoder(int max_depth, uint64_t max_bytes, uint64_t expected_bytes)
      : m_max_depth(max_depth), m_max_bytes(max_bytes) {
    m_out.reserve(std::min(expected_bytes, max_bytes) + 64);
    m_storage_literal.kind = NodeKind::k_str;
    m_storage_literal.text = Text("storage");
  }

  EncodedPickle run(const Node* root) {
    m_out += '\x80';
    m_out += '\x02';
    save(root, 0);
    m_out += '.';
    EncodedPickle result;
    result.bytes = std::move(m_out);
    result.storages = std::move(m_storage_order);
    return result;
  }

private:
  // --- low-level writes ------------------------------------------------------

  void op(char code) { m_out += code; }
  void op(uint8_t code) { m_out += static_cast<char>(code); }
  void le(uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) {
      m_out += static_cast<char>((value >> (8 * i)) & 0xff);
    }
  }
  void write_line(std::string_view text) {
    m_out += text;
    m_out += '\n';
  }

  // The memo lives in the nodes (an epoch per encoding) rather than in a
  // hash map: a large state dict has a million of them.
  uint32_t next_memo_index() { return m_memo_count++; }
  void memoize(const Node* node) {
    node->memo_epoch = m_epoch;
    node->memo_index = next_memo_index();
    write_put(node->memo_index);
  }
  // Memoizes an object the encoder makes itself (never fetched again).
  void memoize_fresh() { write_put(next_memo_index()); }
  void write_put(uint32_t index) {
    if (index < 256) {
      op('q');
      le(index, 1);
    } else {
      op('r');
      le(index, 4);
    }
  }
  void write_get(uint32_t index) {
    if (index < 256) {
      op('h');
      le(index, 1);
    } else {
      op('j');
      le(index, 4);
    }
  }
  bool write_get_if_memoized(const Node* node) {
    if (node->memo_epoch != m_epoch) {
      return false;
    }
    write_get(node->memo_index);
    return true;
  }

  // --- scalars ---------------------------------------------------------------

  void save_int(int64_t value) {
    if (value >= 0 && value <= 0xff) {
      op('K');
      le(static_cast<uint64_t>(value), 1);
    } else if (value >= 0 && value <= 0xffff) {
      op('M');
      le(static_cast<uint64_t>(value), 2);
    } else if (value >= -0x80000000LL && value <= 0x7fffffffLL) {
      op('J');
      le(static_cast<uint64_t>(value), 4);
    } else {
      // Python's encode_long: minimal little-endian two's complement.
      std::string bytes;
      auto bits = static_cast<uint64_t>(value);
      for (int i = 0; i < 8; ++i) {
        bytes += static_cast<char>((bits >> (8 * i)) & 0xff);
      }
      while (bytes.size() > 1) {
        auto top = static_cast<uint8_t>(bytes.back());
        auto next = static_cast<uint8_t>(bytes[bytes.size() - 2]);
        if ((top == 0x00 && !(next & 0x80)) || (top == 0xff && (next & 0x80))) {
          bytes.pop_back();
        } else {
          break;
        }
      }
      save_long_bytes(bytes);
    }
  }
  void save_long_bytes(std::string_view bytes) {
    if (bytes.size() < 256) {
      op(uint8_t{0x8a});
      le(bytes.size(), 1);
    } else {
      op(uint8_t{0x8b});
      le(bytes.size(), 4);
    }
    m_out += bytes;
  }
  void save_float(double value) {
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    op('G');
    for (int i = 7; i >= 0; --i) {
      m_out += static_cast<char>((bits >> (8 * i)) & 0xff);
    }
  }
  void save_str(const Node* node) {
    op('X');
    le(node->text.size(), 4);
    m_out += node->text;
    memoize(node);
  }
  // A str that belongs to no node (written by the encoder itself).
  void save_fresh_str(const std::string& text) {
    op('X');
    le(text.size(), 4);
    m_out += text;
    memoize_fresh();
  }

  // Python memoizes a class once: globals are memoized by name, with the
  // node's own memo as the fast path.
  void save_global(const Node* node) {
    if (write_get_if_memoized(node)) {
      return;
    }
    std::string key = node->text + "\n" + node->name;
    auto it = m_global_memo.find(key);
    if (it != m_global_memo.end()) {
      node->memo_epoch = m_epoch;
      node->memo_index = it->second;
      write_get(it->second);
      return;
    }
    if (node->text.view().find('\n') != std::string_view::npos ||
        node->name.view().find('\n') != std::string_view::npos) {
      // STACK_GLOBAL can name one so; GLOBAL, a line each, cannot (and no
      // importable module or name holds a line break).
      std::string shown = qualified_name(*node).substr(0, 80);
      std::replace(shown.begin(), shown.end(), '\n', ' ');
      throw FormatError("global '" + shown + "' has a line break in its name: it cannot be written");
    }
    op('c');
    write_line(node->text);
    write_line(node->name);
    memoize(node);
    m_global_memo.emplace(std::move(key), node->memo_index);
  }
  // A global the encoder writes itself (builtins set, _codecs.encode).
  void save_global(const char* module, const char* name) {
    Node& node = m_made_globals.emplace_back();
    node.kind = NodeKind::k_global;
    node.text = Text(module);  // literals: they outlive the node
    node.name = Text(name);
    save_global(&node);
  }

  // --- containers --------------------------------------------------------------

  // CPython's C pickler batches a real list or dict differently from the
  // items of a REDUCE (an iterator): a real one writes a single APPEND only
  // when it has exactly one item, an iterator for every batch of one.
  enum class Items { k_exact, k_iterated };

  bool single(size_t n, size_t total, Items source) {
    return source == Items::k_exact ? total == 1 : n == 1;
  }

  void batch_appends(const NodeList& items, int depth, Items source) {
    for (size_t start = 0; start < items.size(); start += k_batch_size) {
      size_t n = std::min(k_batch_size, items.size() - start);
      if (single(n, items.size(), source)) {
        save(items[start], depth);
        op('a');
        continue;
      }
      op('(');
      for (size_t i = start; i < start + n; ++i) {
        save(items[i], depth);
      }
      op('e');
    }
  }
  void batch_setitems(const NodeEntries& entries, int depth,
                      Items source) {
    for (size_t start = 0; start < entries.size(); start += k_batch_size) {
      size_t n = std::min(k_batch_size, entries.size() - start);
      if (single(n, entries.size(), source)) {
        save(entries[start].first, depth);
        save(entries[start].second, depth);
        op('s');
        continue;
      }
      op('(');
      for (size_t i = start; i < start + n; ++i) {
        save(entries[i].first, depth);
        save(entries[i].second, depth);
      }
      op('u');
    }
  }

  void save_tuple(const Node* node, int depth) {
    const auto& items = node->items;
    if (items.empty()) {
      op(')');
      return;
    }
    if (node->visit_epoch == m_epoch) {
      throw FormatError("a tuple contains itself; such a pickle cannot be written");
    }
    node->visit_epoch = m_epoch;  // "being written"

    if (items.size() > 3) {
      op('(');
    }
    for (const Node* item : items) {
      save(item, depth);
    }
    node->visit_epoch = 0;
    static constexpr uint8_t k_tuple_n[] = {0, 0x85, 0x86, 0x87};
    op(items.size() > 3 ? uint8_t{'t'} : k_tuple_n[items.size()]);
    memoize(node);
  }

  // `set`/`frozenset` in protocol 2: REDUCE(builtins.set, ([items],)). Read
  // back, its items sit three levels down (the call, its arguments, the
  // list), and are counted so: what this encoder writes must encode again
  // within the same depth limit once read back (verification does that).
  void save_set(const Node* node, int depth) {
    save_global("__builtin__", node->kind == NodeKind::k_set ? "set" : "frozenset");
    op(']');
    memoize_fresh();
    batch_appends(node->items, depth + 2, Items::k_exact);
    op(uint8_t{0x85});
    memoize_fresh();
    op('R');
    memoize(node);
  }

  // bytes in protocol 2, as Python 3 writes them: `_codecs.encode(latin1, 'latin1')`.
  void save_bytes(const Node* node) {
    bool is_bytearray = node->kind == NodeKind::k_bytearray;
    if (node->text.empty() && !is_bytearray) {
      save_global("__builtin__", "bytes");
      op(')');
      op('R');
      memoize(node);
      return;
    }
    std::string latin1;
    for (unsigned char c : node->text) {
      if (c < 0x80) {
        latin1 += static_cast<char>(c);
      } else {
        latin1 += static_cast<char>(0xc0 | (c >> 6));
        latin1 += static_cast<char>(0x80 | (c & 0x3f));
      }
    }
    if (is_bytearray) {
      save_global("__builtin__", "bytearray");
    } else {
      save_global("_codecs", "encode");
    }
    save_fresh_str(latin1);
    save_fresh_str(is_bytearray ? "latin-1" : "latin1");
    op(uint8_t{0x86});
    memoize_fresh();
    op('R');
    memoize(node);
  }

  void save_call(const Node* node, int depth) {
    if (node->kwargs != nullptr && !node->kwargs->entries.empty()) {
      throw FormatError("an object made with keyword arguments (NEWOBJ_EX) cannot be written "
                        "in pickle protocol 2");
    }
    if (node->visit_epoch == m_epoch) {
      throw FormatError("an object is its own constructor argument; such a pickle cannot be "
                        "written");
    }
    node->visit_epoch = m_epoch;  // "being written"
    save(node->callable, depth);
    save(node->args, depth);
    node->visit_epoch = 0;
    op(node->style == CallStyle::k_newobj ? uint8_t{0x81} : uint8_t{'R'});
    memoize(node);
    save_tail(node, depth);
  }
  // What follows an object's creation: appended items, set items, BUILD.
  void save_tail(const Node* node, int depth) {
    batch_appends(node->items, depth, Items::k_iterated);
    batch_setitems(node->entries, depth, Items::k_iterated);
    if (node->state != nullptr) {
      save(node->state, depth);
      op('b');
    }
  }

  void save_dict(const Node* node, int depth) {
    if (node->callable == nullptr) {
      op('}');
      memoize(node);
      batch_setitems(node->entries, depth, Items::k_exact);
      return;
    }
    save(node->callable, depth);  // collections.OrderedDict
    op(')');
    op('R');
    memoize(node);
    batch_setitems(node->entries, depth, Items::k_iterated);
    if (node->state != nullptr) {
      save(node->state, depth);
      op('b');
    }
  }

  // torch.save's persistent id: ('storage', type, key, location, numel).
  void save_storage(const Node* node, int depth) {
    const Storage* storage = node->storage;
    op('(');
    save(&m_storage_literal, depth);
    save(storage->type, depth);
    if (storage->memo_epoch == m_epoch) {
      write_get(storage->memo_index);  // torch.save reuses the key string
    } else {
      std::string key = std::to_string(m_storage_order.size());
      m_storage_order.push_back(const_cast<Storage*>(storage));
      op('X');
      le(key.size(), 4);
      m_out += key;
      storage->memo_epoch = m_epoch;
      storage->memo_index = next_memo_index();
      write_put(storage->memo_index);
    }
    save(storage->location, depth);
    save_int(storage->numel);
    op('t');
    memoize_fresh();
    op('Q');
  }

  void check_depth(int depth) const {
    if (depth > m_max_depth) {
      throw FormatError("objects nested deeper than " + std::to_string(m_max_depth) + " levels");
    }
  }

  void save(const Node* node, int depth) {
    check_depth(++depth);
    if (m_out.size() > m_max_bytes) {
      throw FormatError("the pickle would grow past " + std::to_string(m_max_bytes) +
                        " bytes: it uses shared objects (through its memo or DUP) so often "
                        "that writing each use out multiplies its size");
    }
    switch (node->kind) {
      case NodeKind::k_none: op('N'); return;
      case NodeKind::k_bool: op(node->boolean ? uint8_t{0x88} : uint8_t{0x89}); return;
      case NodeKind::k_int:
        if (node->text.empty()) {
          save_int(node->integer);
        } else {
          save_long_bytes(node->text);
        }
        return;
      case NodeKind::k_float: save_float(node->real); return;
      case NodeKind::k_storage: save_storage(node, depth); return;
      case NodeKind::k_global: save_global(node); return;
      default: break;
    }
    if (write_get_if_memoized(node)) {
      return;
    }
    switch (node->kind) {
      case NodeKind::k_str: save_str(node); return;
      case NodeKind::k_bytes:
      case NodeKind::k_bytearray:
        check_depth(depth + 2);  // read back: a call, its arguments, a str (see save_set)
        save_bytes(node);
        return;
      case NodeKind::k_tuple: save_tuple(node, depth); return;
      case NodeKind::k_list:
        op(']');
        memoize(node);
        batch_appends(node->items, depth, Items::k_exact);
        return;
      case NodeKind::k_dict: save_dict(node, depth); return;
      case NodeKind::k_set:
      case NodeKind::k_frozenset: save_set(node, depth); return;
      case NodeKind::k_call: save_call(node, depth); return;
      default: return;
    }
  }

  int m_max_depth;
  uint64_t m_max_bytes;
  uint32_t m_epoch = next_epoch();
  uint32_t m_memo_count = 0;
  std::string m_out;
  Node m_storage_literal;
  std::unordered_map<std::string, uint32_t> m_global_memo;
  std::deque<Node> m_made_globals;  // globals the encoder writes of itself
  std::vector<Storage*> m_storage_order;
};

}  // namespace

EncodedPickle encode_pickle(const Node* root, int max_depth, uint64_t max_bytes,
                            uint64_t expected_bytes) {
  return Encoder(max_depth, max_bytes, expected_bytes).run(root);
}

}  // namespace ckpt
