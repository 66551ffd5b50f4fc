// GGUF v3 reader over mmap. Every file is untrusted: each count, string length, dimension,
// type, offset and size is checked against the file before it is used, so a malformed file
// gives a FormatError naming the file and what is wrong — never a crash, a hang, or an
// allocation larger than the file could justify. Opening costs the mapping and this validation;
// tensor bytes are not touched until read.
//
// Thread-safety: a GgufFile is immutable after open; share it freely.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nanochat/gguf/types.hpp"
#include "nanochat/gguf/value.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::gguf {

inline constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr std::uint32_t kDefaultAlignment = 32;

struct TensorInfo {
  std::string name;
  std::vector<std::uint64_t> dims;  // dims[0] is the row length (ggml ne[0])
  TensorTypeInfo type;
  std::uint64_t offset = 0;  // from the start of the data section
  std::uint64_t bytes = 0;

  std::uint64_t elements() const;
  std::string shape() const;  // "2560 x 6912"
};

struct ReadOptions {
  // Accept tensor types nanochat cannot compute with (they are listed, e.g. by `info`); by
  // default they are an error naming the tensor, the type and the architecture.
  bool allow_unsupported_types = false;
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path, const ReadOptions& options = {});
  // Parses bytes already in memory (fuzzing, tests); `name` is used in messages.
  static GgufFile parse(std::span<const std::uint8_t> bytes, std::string name,
                        const ReadOptions& options = {});

  std::uint32_t version() const { return version_; }
  std::uint32_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }
  std::uint64_t file_size() const { return bytes_.size(); }
  const std::string& name() const { return name_; }
  const std::string& architecture() const { return architecture_; }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;
  // Typed look-ups: nullopt when missing; FormatError naming the key when present with another
  // type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<std::int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  const Array* get_array(std::string_view key) const;
  // Typed arrays: nullptr / nullopt when missing; FormatError naming the key when the value is
  // not an array or its elements are not of the type asked for (a list of strings, of integers,
  // of numbers), so that no caller indexes an empty conversion of an array of another type.
  const std::vector<std::string>* get_string_array(std::string_view key) const;
  std::optional<std::vector<std::int64_t>> get_int_array(std::string_view key) const;
  // float32, float64 or integer elements, as float.
  std::optional<std::vector<float>> get_float_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  std::span<const std::uint8_t> tensor_data(const TensorInfo& tensor) const;
  // Tells the kernel a mapped tensor's pages are no longer needed (after it was repacked), so
  // they leave the resident set; reading the tensor again still works (pages come back from the
  // file). No effect for files parsed from memory.
  void release(const TensorInfo& tensor) const;
  // The same for any mapped bytes (the whole pages inside them), e.g. the part of a tensor that
  // a sequential repack has already read.
  void release(std::span<const std::uint8_t> bytes) const;

 private:
  GgufFile() = default;
  void parse_all(const ReadOptions& options);

  std::optional<MappedFile> file_;
  std::span<const std::uint8_t> bytes_;
  std::string name_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::string architecture_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace nanochat::gguf
