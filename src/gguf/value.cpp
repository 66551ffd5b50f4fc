#include "nanochat/gguf/value.hpp"

#include <fmt/format.h>

#include <limits>

namespace nanochat::gguf {

std::size_t Array::size() const {
  if (type == ValueType::kString) return strings.size();
  if (type == ValueType::kArray) return arrays.size();
  const std::size_t width = value_type_size(type);
  return width ? raw.size() / width : 0;
}

Value Array::at(std::size_t i) const {
  switch (type) {
    case ValueType::kUint8:
      return Value(get<std::uint8_t>(i));
    case ValueType::kInt8:
      return Value(get<std::int8_t>(i));
    case ValueType::kUint16:
      return Value(get<std::uint16_t>(i));
    case ValueType::kInt16:
      return Value(get<std::int16_t>(i));
    case ValueType::kUint32:
      return Value(get<std::uint32_t>(i));
    case ValueType::kInt32:
      return Value(get<std::int32_t>(i));
    case ValueType::kFloat32:
      return Value(get<float>(i));
    case ValueType::kBool:
      return Value(get<std::uint8_t>(i) != 0);
    case ValueType::kString:
      return Value(strings[i]);
    case ValueType::kArray:
      return arrays[i];
    case ValueType::kUint64:
      return Value(get<std::uint64_t>(i));
    case ValueType::kInt64:
      return Value(get<std::int64_t>(i));
    case ValueType::kFloat64:
      return Value(get<double>(i));
  }
  return Value();
}

Value string_array(const std::vector<std::string>& items) {
  Array a;
  a.type = ValueType::kString;
  a.strings = items;
  return Value(std::move(a));
}

std::optional<std::int64_t> Value::as_int() const {
  return std::visit(
      [](const auto& v) -> std::optional<std::int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::uint64_t>) {
          if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            return std::nullopt;
          }
          return static_cast<std::int64_t>(v);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<std::int64_t>(v);
        } else {
          return std::nullopt;
        }
      },
      storage_);
}

std::optional<double> Value::as_double() const {
  if (const float* f = get_if<float>()) return *f;
  if (const double* d = get_if<double>()) return *d;
  if (auto i = as_int()) return static_cast<double>(*i);
  return std::nullopt;
}

const Array* Value::as_array() const {
  const auto* p = get_if<std::shared_ptr<const Array>>();
  return p != nullptr ? p->get() : nullptr;
}

std::string Value::display(std::size_t max_items) const {
  if (const Array* a = as_array()) {
    std::string out = fmt::format("[{} x {}]", a->size(), value_type_name(a->type));
    if (max_items == 0 || a->size() == 0) return out;
    out += " ";
    for (std::size_t i = 0; i < a->size() && i < max_items; ++i) {
      out += (i ? ", " : "") + a->at(i).display(0);
    }
    if (a->size() > max_items) out += ", ...";
    return out;
  }
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          const std::string s = v.size() > 200 ? v.substr(0, 200) + "..." : v;
          std::string escaped;
          for (char c : s) {
            if (c == '\n') {
              escaped += "\\n";
            } else if (c == '"') {
              escaped += "\\\"";
            } else {
              escaped += c;
            }
          }
          return "\"" + escaped + "\"";
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::shared_ptr<const Array>>) {
          return "[]";
        } else if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t>) {
          return fmt::format("{}", static_cast<int>(v));
        } else {
          return fmt::format("{}", v);
        }
      },
      storage_);
}

bool operator==(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  if (a.type() == ValueType::kArray) return *a.as_array() == *b.as_array();
  return a.storage_ == b.storage_;
}

}  // namespace nanochat::gguf
