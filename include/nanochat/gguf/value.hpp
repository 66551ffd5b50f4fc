// A GGUF metadata value: one of the twelve scalar types, or an array of values of one type.
// Arrays of fixed-size elements keep the file's bytes (little-endian) rather than one boxed value
// per element, so a 128k-entry vocabulary costs what it costs on disk.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "nanochat/gguf/types.hpp"

namespace nanochat::gguf {

class Value;

struct Array {
  ValueType type = ValueType::kUint8;  // element type
  std::vector<std::uint8_t> raw;       // fixed-size elements, packed
  std::vector<std::string> strings;    // when type == kString
  std::vector<Value> arrays;           // when type == kArray

  std::size_t size() const;
  // Element i as a boxed value.
  Value at(std::size_t i) const;
  // Element i of a fixed-size array, read as T; T must match the element size.
  template <typename T>
  T get(std::size_t i) const {
    T v;
    std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
    return v;
  }
  // All elements converted to T (integers and floats of any fixed-size type); empty for
  // strings and arrays.
  template <typename T>
  std::vector<T> to_vector() const;

  friend bool operator==(const Array&, const Array&) = default;
};

class Value {
 public:
  // Alternatives in ValueType order; index 9 (kArray) holds the array.
  using Storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t,
                               std::uint32_t, std::int32_t, float, bool, std::string,
                               std::shared_ptr<const Array>, std::uint64_t, std::int64_t, double>;

  Value() : storage_(std::uint8_t{0}) {}
  template <typename T>
  requires std::is_constructible_v<Storage, T>
  explicit Value(T v) : storage_(std::move(v)) {}
  explicit Value(const char* s) : storage_(std::string(s)) {}
  explicit Value(Array array) : storage_(std::make_shared<const Array>(std::move(array))) {}

  ValueType type() const { return static_cast<ValueType>(storage_.index()); }
  const Storage& storage() const { return storage_; }

  template <typename T>
  const T* get_if() const {
    return std::get_if<T>(&storage_);
  }
  // Any integer type (not bool) as int64; nullopt otherwise or when a uint64 does not fit.
  std::optional<std::int64_t> as_int() const;
  // float32, float64 or any integer as double.
  std::optional<double> as_double() const;
  const std::string* as_string() const { return get_if<std::string>(); }
  const Array* as_array() const;

  // Readable form for `nanochat info`: arrays show their type, length and first items.
  std::string display(std::size_t max_items = 8) const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  Storage storage_;
};

// Array builders.
Value string_array(const std::vector<std::string>& items);
template <typename T>
Value numeric_array(ValueType type, const std::vector<T>& items) {
  Array a;
  a.type = type;
  a.raw.resize(items.size() * sizeof(T));
  if (!items.empty()) std::memcpy(a.raw.data(), items.data(), a.raw.size());
  return Value(std::move(a));
}

template <typename T>
std::vector<T> Array::to_vector() const {
  std::vector<T> out;
  const std::size_t n = size();
  if (type == ValueType::kString || type == ValueType::kArray) return out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (type) {
      case ValueType::kUint8:
        out.push_back(static_cast<T>(get<std::uint8_t>(i)));
        break;
      case ValueType::kInt8:
        out.push_back(static_cast<T>(get<std::int8_t>(i)));
        break;
      case ValueType::kUint16:
        out.push_back(static_cast<T>(get<std::uint16_t>(i)));
        break;
      case ValueType::kInt16:
        out.push_back(static_cast<T>(get<std::int16_t>(i)));
        break;
      case ValueType::kUint32:
        out.push_back(static_cast<T>(get<std::uint32_t>(i)));
        break;
      case ValueType::kInt32:
        out.push_back(static_cast<T>(get<std::int32_t>(i)));
        break;
      case ValueType::kFloat32:
        out.push_back(static_cast<T>(get<float>(i)));
        break;
      case ValueType::kBool:
        out.push_back(static_cast<T>(get<std::uint8_t>(i) != 0));
        break;
      case ValueType::kUint64:
        out.push_back(static_cast<T>(get<std::uint64_t>(i)));
        break;
      case ValueType::kInt64:
        out.push_back(static_cast<T>(get<std::int64_t>(i)));
        break;
      case ValueType::kFloat64:
        out.push_back(static_cast<T>(get<double>(i)));
        break;
      default:
        break;
    }
  }
  return out;
}

}  // namespace nanochat::gguf
