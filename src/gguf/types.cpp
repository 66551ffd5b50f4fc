#include "nanochat/gguf/types.hpp"

#include <array>
#include <limits>

namespace nanochat::gguf {
namespace {

// ggml's type table (id, name, elements per block, bytes per block) for every id it defines.
constexpr std::array<TensorTypeInfo, 32> kTypes = {{
    {0, "F32", 1, 4, true},          {1, "F16", 1, 2, true},
    {2, "Q4_0", 32, 18, true},       {3, "Q4_1", 32, 20, true},
    {6, "Q5_0", 32, 22, true},       {7, "Q5_1", 32, 24, true},
    {8, "Q8_0", 32, 34, true},       {9, "Q8_1", 32, 36, false},
    {10, "Q2_K", 256, 84, false},    {11, "Q3_K", 256, 110, false},
    {12, "Q4_K", 256, 144, true},    {13, "Q5_K", 256, 176, true},
    {14, "Q6_K", 256, 210, true},    {15, "Q8_K", 256, 292, false},
    {16, "IQ2_XXS", 256, 66, false}, {17, "IQ2_XS", 256, 74, false},
    {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
    {20, "IQ4_NL", 32, 18, false},   {21, "IQ3_S", 256, 110, false},
    {22, "IQ2_S", 256, 82, false},   {23, "IQ4_XS", 256, 136, false},
    {24, "I8", 1, 1, false},         {25, "I16", 1, 2, false},
    {26, "I32", 1, 4, false},        {27, "I64", 1, 8, false},
    {28, "F64", 1, 8, false},        {29, "IQ1_M", 256, 56, false},
    {30, "BF16", 1, 2, true},        {34, "TQ1_0", 256, 54, true},
    {35, "TQ2_0", 256, 66, true},    {39, "MXFP4", 32, 17, false},
}};

// I2_S: 128-weight groups of 32 bytes plus a 32-byte trailer for the whole tensor (see blocks.hpp);
// the block/bytes fields describe the per-element part and tensor_bytes adds the trailer.
constexpr TensorTypeInfo kI2s = {36, "I2_S", 128, 32, true};

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}

}  // namespace

const char* value_type_name(ValueType type) {
  static constexpr const char* kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                           "int32",  "float32", "bool",   "string", "array",
                                           "uint64", "int64",   "float64"};
  const auto i = static_cast<std::uint32_t>(type);
  return i < kValueTypeCount ? kNames[i] : "unknown";
}

std::size_t value_type_size(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool is_bitnet_architecture(std::string_view architecture) {
  return architecture.find("bitnet") != std::string_view::npos ||
         architecture.find("BitNet") != std::string_view::npos;
}

std::optional<TensorTypeInfo> tensor_type_info(std::uint32_t id, std::string_view architecture) {
  if (id == kI2s.id && is_bitnet_architecture(architecture)) return kI2s;
  for (const TensorTypeInfo& t : kTypes) {
    if (t.id == id) return t;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> tensor_bytes(const TensorTypeInfo& type,
                                          std::span<const std::uint64_t> dims) {
  if (dims.empty()) return std::nullopt;
  const auto block = static_cast<std::uint64_t>(type.block);
  if (dims[0] % block != 0) return std::nullopt;
  std::uint64_t elements = 1;
  for (std::uint64_t d : dims) {
    if (mul_overflows(elements, d, elements)) return std::nullopt;
  }
  if (elements > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return std::nullopt;
  }
  std::uint64_t bytes = 0;
  if (mul_overflows(elements / block, static_cast<std::uint64_t>(type.block_bytes), bytes)) {
    return std::nullopt;
  }
  if (type.id == kI2s.id && type.block == kI2s.block) bytes += 32;  // I2_S trailer (scale)
  return bytes;
}

}  // namespace nanochat::gguf
