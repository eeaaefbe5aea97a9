// A set of strings viewed elsewhere, each with a number, for the paths that
// meet every key of a state dict once: open addressing in one array, where a
// std::unordered_map cost an allocation and a free per key (50,000 of each
// for a state dict of 50,000 tensors).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace ckpt {

class StringIndex {
public:
  explicit StringIndex(size_t expected = 0) { m_slots.resize(capacity_for(expected)); }

  // Adds `key` (its bytes must outlive the index) with `value`; if an equal
  // key is there already, changes nothing and returns that key's value.
  std::optional<size_t> insert(std::string_view key, size_t value) {
    if (2 * (m_count + 1) > m_slots.size()) {
      grow();
    }
    Slot& slot = find_slot(m_slots, key);
    if (slot.used) {
      return slot.value;
    }
    slot = {key, value, true};
    ++m_count;
    return std::nullopt;
  }

private:
  struct Slot {
    std::string_view key;
    size_t value = 0;
    bool used = false;
  };

  static size_t capacity_for(size_t count) {
    size_t slots = 16;
    while (slots < 2 * count) {
      slots *= 2;
    }
    return slots;
  }
  // The slot of `key`, or the free one where it belongs.
  static Slot& find_slot(std::vector<Slot>& slots, std::string_view key) {
    size_t mask = slots.size() - 1;
    for (size_t i = std::hash<std::string_view>()(key) & mask;; i = (i + 1) & mask) {
      if (!slots[i].used || slots[i].key == key) {
        return slots[i];
      }
    }
  }
  void grow() {
    std::vector<Slot> bigger(m_slots.size() * 2);
    for (const Slot& slot : m_slots) {
      if (slot.used) {
        find_slot(bigger, slot.key) = slot;
      }
    }
    m_slots = std::move(bigger);
  }

  std::vector<Slot> m_slots;  // a power of two, at most half used
  size_t m_count = 0;
};

}  // namespace ckpt
