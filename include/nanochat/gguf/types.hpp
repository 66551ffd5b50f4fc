// GGUF v3 value types and ggml tensor types: ids, names and sizes, as the format defines them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace nanochat::gguf {

// Metadata value types (gguf_type).
enum class ValueType : std::uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
inline constexpr std::uint32_t kValueTypeCount = 13;
const char* value_type_name(ValueType type);
// Bytes of one value of a fixed-size type; 0 for string and array.
std::size_t value_type_size(ValueType type);

// ggml tensor types nanochat knows by id. Only some can be read into a model (see
// `supported`); the rest are known so that sizes can be checked and errors can name them.
enum class TensorType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kI2_S = 36,  // bitnet.cpp; the same id means something else in upstream ggml
};
// The id a GGUF tensor table stores for `type`.
constexpr std::uint32_t type_id(TensorType type) { return static_cast<std::uint32_t>(type); }

// general.file_type values (llama.cpp's llama_ftype: LLAMA_FTYPE_MOSTLY_TQ1_0 / _TQ2_0) for the
// files nanochat writes: the type most tensors have.
enum class FileType : std::uint32_t {
  kTQ1_0 = 36,
  kTQ2_0 = 37,
};

struct TensorTypeInfo {
  std::uint32_t id;
  const char* name;
  std::int64_t block;        // elements per block
  std::int64_t block_bytes;  // bytes per block
  bool supported;            // nanochat can read its values

  bool is(TensorType type) const { return id == type_id(type); }
};

// The type with this id in `architecture`'s files (36 is I2_S only for BitNet architectures);
// nullopt for an id ggml does not define.
std::optional<TensorTypeInfo> tensor_type_info(std::uint32_t id, std::string_view architecture);
// Whether `architecture` is one of bitnet.cpp's (I2_S allowed).
bool is_bitnet_architecture(std::string_view architecture);

// Bytes of a tensor of `type` and `dims` (dims[0] is the row length). nullopt when the row
// length is not a whole number of blocks or the size overflows.
std::optional<std::uint64_t> tensor_bytes(const TensorTypeInfo& type,
                                          std::span<const std::uint64_t> dims);

}  // namespace nanochat::gguf
