// This file implements a pickle decoder that executes nothing.
//
// It is a stack machine over protocols 0–5, like CPython's `_Unpickler`, but
// where CPython imports modules and calls functions it builds inert nodes:
// GLOBAL/STACK_GLOBAL give `k_global` names, REDUCE/NEWOBJ/INST/OBJ give
// `k_call` nodes, BUILD records the state, SETITEM/APPEND on such a call
// record the items. The memo keeps shared references shared. Every read is
// bounds-checked and every structure is capped (see `PickleLimits`), so a
// hostile pickle can only produce an error naming the byte offset.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ckpt/error.h"
#include "ckpt/pickle.h"
#include "util/utf8.h"

namespace ckpt {
namespace {

// Opcode bytes, named as in CPython's Lib/pickle.py.
enum Opcode : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', FLOAT = 'F', INT = 'I',
  BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N', PERSID = 'P',
  BINPERSID = 'Q', REDUCE = 'R', STRING = 'S', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  UNICODE = 'V', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd',
  EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h', INST = 'i', LONG_BINGET = 'j',
  LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', PUT = 'p', BINPUT = 'q', LONG_BINPUT = 'r',
  SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G',
  PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85,
  TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b,
  BINBYTES = 'B', SHORT_BINBYTES = 'C', SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97,
  READONLY_BUFFER = 0x98,
};

const char* kind_name(NodeKind kind) {
  switch (kind) {
    case NodeKind::k_none: return "None";
    case NodeKind::k_bool: return "bool";
    case NodeKind::k_int: return "int";
    case NodeKind::k_float: return "float";
    case NodeKind::k_str: return "str";
    case NodeKind::k_bytes: return "bytes";
    case NodeKind::k_bytearray: return "bytearray";
    case NodeKind::k_list: return "list";
    case NodeKind::k_tuple: return "tuple";
    case NodeKind::k_dict: return "dict";
    case NodeKind::k_set: return "set";
    case NodeKind::k_frozenset: return "frozenset";
    case NodeKind::k_global: return "global";
    case NodeKind::k_call: return "object";
    case NodeKind::k_storage: return "storage";
  }
  return "?";
}

// Appends `code` as UTF-8.
void append_utf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xc0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xe0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  }
}

std::string latin1_to_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    append_utf8(out, c);
  }
  return out;
}

// Strips redundant sign bytes from a little-endian two's complement number,
// giving the form Python's `encode_long` writes.
void minimize_twos_complement(std::string& bytes) {
  while (bytes.size() > 1) {
    auto top = static_cast<uint8_t>(bytes.back());
    auto next = static_cast<uint8_t>(bytes[bytes.size() - 2]);
    bool redundant = (top == 0x00 && (next & 0x80) == 0) || (top == 0xff && (next & 0x80) != 0);
    if (!redundant) {
      break;
    }
    bytes.pop_back();
  }
  if (bytes.size() == 1 && bytes[0] == 0) {
    bytes.clear();
  }
}

class Decoder {
public:
  Decoder(Graph& graph, ByteSpan in, const PersistentLoader& load, uint64_t report_base,
          const PickleLimits& limits)
      : m_graph(graph), m_in(in), m_load(load), m_limits(limits), m_report_base(report_base) {
    // torch.save's BINPUTs take 2 bytes: room for one every 2 bytes (virtual
    // memory, touched only as used) spares the memo its moves as it grows.
    m_memo.reserve(std::min<uint64_t>(in.size / 2 + 1, uint64_t{1} << 24));
  }

  Node* run(uint64_t* consumed) {
    while (true) {
      m_op_start = m_pos;
      if (m_graph.node_count() > m_limits.max_nodes) {
        fail("pickle makes more than " + std::to_string(m_limits.max_nodes) + " objects");
      }
      uint8_t op = read_byte();
      if (op == STOP) {
        Node* result = pop();
        if (consumed != nullptr) {
          *consumed = m_pos;
        }
        return result;
      }
      step(op);
    }
  }

private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError("@" + std::to_string(m_report_base + m_op_start) + ": " + what);
  }

  // --- reading ---------------------------------------------------------------

  void need(uint64_t n) const {
    if (n > m_in.size - m_pos) {
      throw FormatError("@" + std::to_string(m_report_base + m_op_start) +
                        ": truncated pickle: opcode needs " + std::to_string(n) +
                        " more bytes, " + std::to_string(m_in.size - m_pos) + " left");
    }
  }
  uint8_t read_byte() {
    need(1);
    return m_in.data[m_pos++];
  }
  std::string_view read_bytes(uint64_t n) {
    need(n);
    std::string_view out(reinterpret_cast<const char*>(m_in.data + m_pos), n);
    m_pos += n;
    return out;
  }
  uint64_t read_le(int n) {
    std::string_view raw = read_bytes(n);
    uint64_t value = 0;
    for (int i = n - 1; i >= 0; --i) {
      value = (value << 8) | static_cast<uint8_t>(raw[i]);
    }
    return value;
  }
  std::string_view read_line() {
    const uint8_t* start = m_in.data + m_pos;
    const void* newline = std::memchr(start, '\n', m_in.size - m_pos);
    if (newline == nullptr) {
      fail("truncated pickle: line without newline");
    }
    uint64_t length = static_cast<const uint8_t*>(newline) - start;
    m_pos += length + 1;
    return {reinterpret_cast<const char*>(start), length};
  }
  // A length-prefixed payload whose length is checked against the input.
  std::string_view read_counted(uint64_t length) { return read_bytes(length); }

  // --- the stack -------------------------------------------------------------

  void push(Node* node) {
    if (m_stack.size() >= m_limits.max_stack) {
      fail("stack holds more than " + std::to_string(m_limits.max_stack) + " values");
    }
    m_stack.push_back(node);
  }
  size_t floor() const { return m_marks.empty() ? 0 : m_marks.back(); }
  Node* pop() {
    if (m_stack.size() <= floor()) {
      fail("pop from an empty stack");
    }
    Node* node = m_stack.back();
    m_stack.pop_back();
    return node;
  }
  Node* top() {
    if (m_stack.size() <= floor()) {
      fail("empty stack");
    }
    return m_stack.back();
  }
  // The values above the innermost MARK, which they leave on the stack:
  // callers read them, then `drop_to(mark)` (no copy for every tuple).
  struct Marked {
    size_t mark;
    Node* const* items;
    size_t size;
  };
  Marked pop_mark() {
    if (m_marks.empty()) {
      fail("no MARK to pop to");
    }
    size_t mark = m_marks.back();
    m_marks.pop_back();
    return {mark, m_stack.data() + mark, m_stack.size() - mark};
  }
  void drop_to(const Marked& marked) { m_stack.resize(marked.mark); }
  // The value under the MARK `marked` came from: what APPENDS, SETITEMS and
  // ADDITEMS add to.
  Node* below(const Marked& marked) {
    if (marked.mark <= floor()) {
      fail("empty stack");
    }
    return m_stack[marked.mark - 1];
  }

  Node* make(NodeKind kind) { return m_graph.make(kind); }
  Node* make_tuple(Node* const* items, size_t size) {
    if (size == 0) {
      return make_empty_tuple();
    }
    Node* node = make(NodeKind::k_tuple);
    m_graph.assign(node->items, items, size);
    return node;
  }
  // Nothing changes a tuple in place and Python never memoizes `()`, so one
  // node serves every empty tuple (each tensor's OrderedDict() has one).
  Node* make_empty_tuple() {
    if (m_empty_tuple == nullptr) {
      m_empty_tuple = make(NodeKind::k_tuple);
    }
    return m_empty_tuple;
  }
  Node* make_bytes(NodeKind kind, std::string_view raw) {
    Node* node = make(kind);
    node->text = m_graph.copy_text(raw);
    return node;
  }
  // Python never memoizes ints, bools or None, and nothing changes a node of
  // them in place, so one node per value serves every use: the offsets,
  // sizes, strides and flags of a state dict's tensors are a third of its
  // nodes. (A memo get already hands out one node many times.)
  Node* make_bool(bool value) {
    Node*& shared = m_bools[value ? 1 : 0];
    if (shared == nullptr) {
      shared = make(NodeKind::k_bool);
      shared->boolean = value;
    }
    return shared;
  }
  Node* make_none() {
    if (m_none == nullptr) {
      m_none = make(NodeKind::k_none);
    }
    return m_none;
  }
  Node* make_int(int64_t value) {
    if (value < 0 || value >= static_cast<int64_t>(k_shared_ints)) {
      return m_graph.make_int(value);
    }
    Node*& shared = m_ints[static_cast<size_t>(value)];
    if (shared == nullptr) {
      shared = m_graph.make_int(value);
    }
    return shared;
  }

  // An integer from little-endian two's complement `raw` (LONG1/LONG4).
  Node* make_long(std::string_view raw) {
    if (raw.size() > m_limits.max_int_bytes) {
      fail("integer of " + std::to_string(raw.size()) + " bytes exceeds the limit of " +
           std::to_string(m_limits.max_int_bytes));
    }
    std::string bytes(raw);
    minimize_twos_complement(bytes);
    Node* node = make(NodeKind::k_int);
    if (bytes.size() <= 8) {
      uint64_t value = 0;
      for (size_t i = bytes.size(); i-- > 0;) {
        value = (value << 8) | static_cast<uint8_t>(bytes[i]);
      }
      if (!bytes.empty() && bytes.size() < 8 && (static_cast<uint8_t>(bytes.back()) & 0x80)) {
        value |= ~uint64_t{0} << (8 * bytes.size());  // sign-extend
      }
      node->integer = static_cast<int64_t>(value);
    } else {
      node->text = m_graph.copy_text(bytes);
    }
    return node;
  }

  // An integer from decimal text (INT and LONG opcodes of protocol 0).
  Node* make_decimal(std::string_view text) {
    if (!text.empty() && text.back() == 'L') {
      text.remove_suffix(1);
    }
    bool negative = !text.empty() && (text[0] == '-' || text[0] == '+');
    if (negative && text[0] == '+') {
      negative = false;
    }
    std::string_view digits = text.substr(!text.empty() && (text[0] == '-' || text[0] == '+'));
    if (digits.empty() || digits.size() > m_limits.max_int_bytes * 2) {
      fail("bad integer literal '" + std::string(text.substr(0, 40)) + "'");
    }
    // Magnitude as little-endian base-256, built digit by digit.
    std::vector<uint8_t> magnitude;
    for (char c : digits) {
      if (c < '0' || c > '9') {
        fail("bad integer literal '" + std::string(text.substr(0, 40)) + "'");
      }
      unsigned carry = static_cast<unsigned>(c - '0');
      for (uint8_t& byte : magnitude) {
        unsigned value = byte * 10u + carry;
        byte = static_cast<uint8_t>(value & 0xff);
        carry = value >> 8;
      }
      while (carry != 0) {
        magnitude.push_back(static_cast<uint8_t>(carry & 0xff));
        carry >>= 8;
      }
    }
    magnitude.push_back(0);  // room for the sign bit
    if (negative) {
      unsigned carry = 1;
      for (uint8_t& byte : magnitude) {
        unsigned value = static_cast<uint8_t>(~byte) + carry;
        byte = static_cast<uint8_t>(value & 0xff);
        carry = value >> 8;
      }
    }
    return make_long(std::string_view(reinterpret_cast<const char*>(magnitude.data()),
                                      magnitude.size()));
  }

  // Python 2 `repr` of a str: quotes and backslash escapes (STRING opcode).
  std::string unquote(std::string_view text) {
    if (text.size() < 2 || (text[0] != '\'' && text[0] != '"') || text.back() != text[0]) {
      fail("STRING opcode argument must be quoted");
    }
    text = text.substr(1, text.size() - 2);
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (c != '\\' || i + 1 == text.size()) {
        out += c;
        continue;
      }
      char e = text[++i];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'x':
          if (i + 2 >= text.size()) {
            fail("bad \\x escape in STRING");
          }
          out += static_cast<char>(std::strtoul(std::string(text.substr(i + 1, 2)).c_str(), nullptr, 16));
          i += 2;
          break;
        default:
          if (e >= '0' && e <= '7') {
            size_t n = 1;
            while (n < 3 && i + n < text.size() && text[i + n] >= '0' && text[i + n] <= '7') {
              ++n;
            }
            out += static_cast<char>(std::strtoul(std::string(text.substr(i, n)).c_str(), nullptr, 8));
            i += n - 1;
          } else {
            out += e;  // \\, \', \"
          }
      }
    }
    return out;
  }

  // A str's bytes, which must be UTF-8 as Python's pickle decodes them
  // (`surrogatepass`): it refuses anything else, and so does torch.load, so
  // a file holding such a str loads nowhere, and an output of it would not.
  std::string_view utf8_text(std::string_view bytes) const {
    size_t bad = first_invalid_utf8(bytes, true);
    if (bad != bytes.size()) {
      fail("a str whose byte " + std::to_string(bad) +
           " is not UTF-8 (Python's pickle, and so torch.load, refuses it too)");
    }
    return bytes;
  }

  // Python's raw-unicode-escape (UNICODE opcode): \uXXXX and \UXXXXXXXX
  // escapes, every other byte a Latin-1 character.
  std::string raw_unicode_escape(std::string_view text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == 'u' || text[i + 1] == 'U')) {
        size_t digits = text[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + digits > text.size()) {
          fail("bad \\u escape in UNICODE");
        }
        std::string hex(text.substr(i + 2, digits));
        char* end = nullptr;
        unsigned long code = std::strtoul(hex.c_str(), &end, 16);
        if (*end != '\0' || code > 0x10ffff) {
          fail("bad \\u escape in UNICODE");
        }
        append_utf8(out, static_cast<uint32_t>(code));
        i += 1 + digits;
      } else {
        append_utf8(out, static_cast<unsigned char>(text[i]));
      }
    }
    return out;
  }

  Node* make_global(std::string_view module, std::string_view name) {
    return m_graph.make_global(module, name);
  }

  // --- memo ------------------------------------------------------------------

  // Python numbers memo entries 0, 1, 2…: a vector serves them; a sparse
  // index (only a hand-made pickle has one) goes to a map. The vector grows
  // only while it stays dense (at most twice the puts it holds, plus 4096):
  // else puts 4095 apart would make each 5-byte LONG_BINPUT allocate 32 KB,
  // and a 1 MB pickle take 8 GB.
  void memo_put(uint64_t index) {
    Node* node = top();
    if (index == m_memo.size()) {  // the usual case: Python numbers puts 0, 1, 2…
      m_memo.push_back(node);
      ++m_dense_puts;
      return;
    }
    if (index < m_memo.size() + 4096 && index <= 2 * m_dense_puts + 4096) {
      if (index >= m_memo.size()) {
        m_memo.resize(index + 1, nullptr);
      }
      m_memo[index] = node;
      ++m_dense_puts;
      return;
    }
    if (m_sparse_memo.size() >= m_limits.max_memo_entries && m_sparse_memo.count(index) == 0) {
      fail("memo holds more than " + std::to_string(m_limits.max_memo_entries) + " entries");
    }
    m_sparse_memo[index] = node;
  }
  void memo_get(uint64_t index) {
    Node* node = nullptr;
    if (index < m_memo.size()) {
      node = m_memo[index];
    } else if (auto it = m_sparse_memo.find(index); it != m_sparse_memo.end()) {
      node = it->second;
    }
    if (node == nullptr) {
      fail("memo key " + std::to_string(index) + " was never stored");
    }
    push(node);
  }
  uint64_t parse_memo_index(std::string_view line) {
    std::string text(line);
    char* end = nullptr;
    errno = 0;
    unsigned long long value = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno != 0) {
      fail("bad memo key '" + text.substr(0, 40) + "'");
    }
    return value;
  }

  // --- object building ---------------------------------------------------------

  // REDUCE: `callable(*args)`. `collections.OrderedDict()` becomes a dict node
  // so state dicts are plain data from here on.
  Node* make_call(Node* callable, Node* args, CallStyle style) {
    if (args->kind != NodeKind::k_tuple) {
      fail(std::string(style == CallStyle::k_reduce ? "REDUCE" : "NEWOBJ") +
           " arguments must be a tuple, not a " + kind_name(args->kind));
    }
    if (style == CallStyle::k_reduce && callable->is_global("collections", "OrderedDict") &&
        ordered_dict_items(args)) {
      Node* dict = make(NodeKind::k_dict);
      dict->callable = callable;
      if (!args->items.empty()) {
        for (Node* pair : args->items[0]->items) {
          m_graph.push_back(dict->entries, NodeEntry{pair->items[0], pair->items[1]});
        }
      }
      return dict;
    }
    Node* call = make(NodeKind::k_call);
    call->callable = callable;
    call->args = args;
    call->style = style;
    return call;
  }
  // True when `args` is `()` or `([[k, v], …],)` (Python 2's OrderedDict reduce).
  static bool ordered_dict_items(const Node* args) {
    if (args->items.empty()) {
      return true;
    }
    if (args->items.size() != 1 || args->items[0]->kind != NodeKind::k_list) {
      return false;
    }
    for (const Node* pair : args->items[0]->items) {
      bool is_pair = (pair->kind == NodeKind::k_list || pair->kind == NodeKind::k_tuple) &&
                     pair->items.size() == 2;
      if (!is_pair) {
        return false;
      }
    }
    return true;
  }

  void set_items(Node* target, Node* const* flat, size_t size, const char* opcode) {
    if (size % 2 != 0) {
      fail(std::string(opcode) + " with an odd number of items");
    }
    if (target->kind != NodeKind::k_dict && target->kind != NodeKind::k_call) {
      fail(std::string(opcode) + " on a " + kind_name(target->kind) + ", not a dict");
    }
    for (size_t i = 0; i < size; i += 2) {
      m_graph.push_back(target->entries, NodeEntry{flat[i], flat[i + 1]});
    }
  }
  void append_items(Node* target, Node* const* items, size_t size, const char* opcode) {
    if (target->kind != NodeKind::k_list && target->kind != NodeKind::k_call) {
      fail(std::string(opcode) + " on a " + kind_name(target->kind) + ", not a list");
    }
    m_graph.append(target->items, items, size);
  }
  void build(Node* target, Node* state) {
    bool buildable = target->kind == NodeKind::k_call ||
                     (target->kind == NodeKind::k_dict && target->callable != nullptr);
    if (!buildable) {
      fail(std::string("BUILD on a ") + kind_name(target->kind) +
           ", which has no state to set");
    }
    if (target->state != nullptr) {
      fail("second BUILD on one object");
    }
    target->state = state;
  }

  // --- the opcodes -------------------------------------------------------------

  void step(uint8_t op) {
    switch (op) {
      case PROTO: {
        uint8_t version = read_byte();
        if (version > 5) {
          fail("unsupported pickle protocol " + std::to_string(version));
        }
        break;
      }
      case FRAME: read_le(8); break;  // framing only groups opcodes
      case MARK:
        if (m_marks.size() >= m_limits.max_open_marks) {
          fail("more than " + std::to_string(m_limits.max_open_marks) + " nested MARKs");
        }
        m_marks.push_back(m_stack.size());
        break;
      case POP:
        if (m_stack.size() > floor()) {
          m_stack.pop_back();
        } else if (!m_marks.empty()) {
          drop_to(pop_mark());  // CPython: POP with nothing above the MARK drops the MARK
        } else {
          fail("pop from an empty stack");
        }
        break;
      case POP_MARK: drop_to(pop_mark()); break;
      case DUP: push(top()); break;

      case NONE: push(make_none()); break;
      case NEWTRUE: push(make_bool(true)); break;
      case NEWFALSE: push(make_bool(false)); break;
      case BININT: push(make_int(static_cast<int32_t>(read_le(4)))); break;
      case BININT1: push(make_int(read_byte())); break;
      case BININT2: push(make_int(static_cast<int64_t>(read_le(2)))); break;
      case LONG1: push(make_long(read_counted(read_byte()))); break;
      case LONG4: {
        auto length = static_cast<int32_t>(read_le(4));
        if (length < 0) {
          fail("LONG4 with negative length " + std::to_string(length));
        }
        if (static_cast<uint64_t>(length) > m_limits.max_int_bytes) {
          fail("LONG4 of " + std::to_string(length) + " bytes exceeds the limit of " +
               std::to_string(m_limits.max_int_bytes));
        }
        push(make_long(read_counted(static_cast<uint64_t>(length))));
        break;
      }
      case INT: {
        std::string_view line = read_line();
        if (line == "01" || line == "00") {
          push(make_bool(line == "01"));
        } else {
          push(make_decimal(line));
        }
        break;
      }
      case LONG: push(make_decimal(read_line())); break;
      case BINFLOAT: {
        uint64_t bits = 0;
        for (char c : read_bytes(8)) {
          bits = (bits << 8) | static_cast<uint8_t>(c);  // big-endian
        }
        Node* node = make(NodeKind::k_float);
        std::memcpy(&node->real, &bits, sizeof bits);
        push(node);
        break;
      }
      case FLOAT: {
        std::string text(read_line());
        char* end = nullptr;
        double value = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0') {
          fail("bad float literal '" + text.substr(0, 40) + "'");
        }
        Node* node = make(NodeKind::k_float);
        node->real = value;
        push(node);
        break;
      }

      case BINUNICODE: push(m_graph.make_str(utf8_text(read_counted(read_le(4))))); break;
      case SHORT_BINUNICODE: push(m_graph.make_str(utf8_text(read_counted(read_byte())))); break;
      case BINUNICODE8: push(m_graph.make_str(utf8_text(read_counted(read_le(8))))); break;
      case UNICODE: push(m_graph.make_str(raw_unicode_escape(read_line()))); break;
      // Python 2 str: torch.load decodes it to str; Latin-1 keeps every byte.
      case STRING: push(m_graph.make_str(latin1_to_utf8(unquote(read_line())))); break;
      case BINSTRING: {
        auto length = static_cast<int32_t>(read_le(4));
        if (length < 0) {
          fail("BINSTRING with negative length");
        }
        push(m_graph.make_str(latin1_to_utf8(read_counted(static_cast<uint64_t>(length)))));
        break;
      }
      case SHORT_BINSTRING: push(m_graph.make_str(latin1_to_utf8(read_counted(read_byte())))); break;
      case BINBYTES: push(make_bytes(NodeKind::k_bytes, read_counted(read_le(4)))); break;
      case SHORT_BINBYTES: push(make_bytes(NodeKind::k_bytes, read_counted(read_byte()))); break;
      case BINBYTES8: push(make_bytes(NodeKind::k_bytes, read_counted(read_le(8)))); break;
      case BYTEARRAY8: push(make_bytes(NodeKind::k_bytearray, read_counted(read_le(8)))); break;
      case NEXT_BUFFER: fail("out-of-band buffers (NEXT_BUFFER) are not supported");
      case READONLY_BUFFER: top(); break;

      case EMPTY_TUPLE: push(make_empty_tuple()); break;
      case TUPLE: {
        Marked marked = pop_mark();
        Node* tuple = make_tuple(marked.items, marked.size);
        drop_to(marked);
        push(tuple);
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        size_t size = op - TUPLE1 + 1;
        if (m_stack.size() < floor() + size) {
          fail("pop from an empty stack");
        }
        Node* tuple = make_tuple(m_stack.data() + m_stack.size() - size, size);
        m_stack.resize(m_stack.size() - size);
        push(tuple);
        break;
      }
      case EMPTY_LIST: push(make(NodeKind::k_list)); break;
      case LIST: {
        Node* list = make(NodeKind::k_list);
        Marked marked = pop_mark();
        m_graph.assign(list->items, marked.items, marked.size);
        drop_to(marked);
        push(list);
        break;
      }
      case APPEND: {
        Node* item = pop();
        append_items(top(), &item, 1, "APPEND");
        break;
      }
      case APPENDS: {
        Marked marked = pop_mark();
        append_items(below(marked), marked.items, marked.size, "APPENDS");
        drop_to(marked);
        break;
      }
      case EMPTY_DICT: push(make(NodeKind::k_dict)); break;
      case DICT: {
        Node* dict = make(NodeKind::k_dict);
        Marked marked = pop_mark();
        set_items(dict, marked.items, marked.size, "DICT");
        drop_to(marked);
        push(dict);
        break;
      }
      case SETITEM: {
        Node* value = pop();
        Node* key = pop();
        Node* pair[2] = {key, value};
        set_items(top(), pair, 2, "SETITEM");
        break;
      }
      case SETITEMS: {
        Marked marked = pop_mark();
        set_items(below(marked), marked.items, marked.size, "SETITEMS");
        drop_to(marked);
        break;
      }
      case EMPTY_SET: push(make(NodeKind::k_set)); break;
      case ADDITEMS: {
        Marked marked = pop_mark();
        Node* set = below(marked);
        if (set->kind != NodeKind::k_set) {
          fail(std::string("ADDITEMS on a ") + kind_name(set->kind) + ", not a set");
        }
        m_graph.append(set->items, marked.items, marked.size);
        drop_to(marked);
        break;
      }
      case FROZENSET: {
        Node* set = make(NodeKind::k_frozenset);
        Marked marked = pop_mark();
        m_graph.assign(set->items, marked.items, marked.size);
        drop_to(marked);
        push(set);
        break;
      }

      case GLOBAL: {
        std::string_view module = read_line();
        std::string_view name = read_line();
        push(make_global(module, name));
        break;
      }
      case STACK_GLOBAL: {
        Node* name = pop();
        Node* module = pop();
        if (!name->is_str() || !module->is_str()) {
          fail("STACK_GLOBAL needs two str, got " + std::string(kind_name(module->kind)) +
               " and " + kind_name(name->kind));
        }
        push(make_global(module->text, name->text));
        break;
      }
      case REDUCE: {
        Node* args = pop();
        Node* callable = pop();
        push(make_call(callable, args, CallStyle::k_reduce));
        break;
      }
      case NEWOBJ: {
        Node* args = pop();
        Node* cls = pop();
        push(make_call(cls, args, CallStyle::k_newobj));
        break;
      }
      case NEWOBJ_EX: {
        Node* kwargs = pop();
        Node* args = pop();
        Node* cls = pop();
        if (kwargs->kind != NodeKind::k_dict) {
          fail("NEWOBJ_EX keyword arguments must be a dict");
        }
        Node* call = make_call(cls, args, CallStyle::k_newobj);
        call->kwargs = kwargs;
        push(call);
        break;
      }
      case INST: {
        std::string_view module = read_line();
        std::string_view name = read_line();
        Marked marked = pop_mark();
        Node* args = make_tuple(marked.items, marked.size);
        drop_to(marked);
        push(make_call(make_global(module, name), args, CallStyle::k_reduce));
        break;
      }
      case OBJ: {
        Marked marked = pop_mark();
        if (marked.size == 0) {
          fail("OBJ without a class");
        }
        Node* cls = marked.items[0];
        Node* args = make_tuple(marked.items + 1, marked.size - 1);
        drop_to(marked);
        push(make_call(cls, args, CallStyle::k_reduce));
        break;
      }
      case BUILD: {
        Node* state = pop();
        build(top(), state);
        break;
      }
      case BINPERSID: {
        Node* id = pop();
        push(load_persistent(id));
        break;
      }
      case PERSID: {
        std::string_view line = read_line();
        push(load_persistent(m_graph.make_str(line)));
        break;
      }
      case EXT1:
      case EXT2:
      case EXT4: fail("copyreg extension codes (EXT1/EXT2/EXT4) are not supported");

      case BINGET: memo_get(read_byte()); break;
      case LONG_BINGET: memo_get(read_le(4)); break;
      case GET: memo_get(parse_memo_index(read_line())); break;
      case BINPUT: memo_put(read_byte()); break;
      case LONG_BINPUT: memo_put(read_le(4)); break;
      case PUT: memo_put(parse_memo_index(read_line())); break;
      case MEMOIZE: memo_put(m_memoized++); break;

      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("unknown opcode ") + hex);
      }
    }
  }

  Node* load_persistent(Node* id) {
    try {
      return m_load(m_graph, id);
    } catch (const FormatError& e) {
      fail(e.what());
    }
  }

  Graph& m_graph;
  ByteSpan m_in;
  const PersistentLoader& m_load;
  const PickleLimits& m_limits;
  uint64_t m_report_base;
  uint64_t m_pos = 0;
  uint64_t m_op_start = 0;
  std::vector<Node*> m_stack;
  std::vector<size_t> m_marks;
  std::vector<Node*> m_memo;
  std::unordered_map<uint64_t, Node*> m_sparse_memo;
  uint64_t m_memoized = 0;  // MEMOIZE's next index
  uint64_t m_dense_puts = 0;  // puts into `m_memo`
  static constexpr size_t k_shared_ints = 1024;
  std::vector<Node*> m_ints = std::vector<Node*>(k_shared_ints, nullptr);
  Node* m_bools[2] = {nullptr, nullptr};
  Node* m_none = nullptr;
  Node* m_empty_tuple = nullptr;
};

}  // namespace

Node* decode_pickle(Graph& graph, ByteSpan bytes, const PersistentLoader& load_persistent,
                    uint64_t* consumed, uint64_t report_base, const PickleLimits& limits) {
  Decoder decoder(graph, bytes, load_persistent, report_base, limits);
  return decoder.run(consumed);
}

}  // namespace ckpt
