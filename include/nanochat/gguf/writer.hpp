// GGUF v3 writer. Output is deterministic — metadata and tensors in the order they were added,
// zero padding — and written atomically (temporary file, fsync, rename), so a failed or
// interrupted export never leaves a partial file behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nanochat/gguf/types.hpp"
#include "nanochat/gguf/value.hpp"

namespace nanochat::gguf {

class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t alignment = 32);

  // Sets a metadata value; setting a key again replaces the value in place.
  void set(const std::string& key, Value value);
  // Adds a tensor. dims[0] is the row length; `data` must hold exactly the bytes the type and
  // shape need (checked). The bytes are copied.
  void add_tensor(const std::string& name, std::uint32_t type_id, std::vector<std::uint64_t> dims,
                  std::span<const std::uint8_t> data);
  void add_tensor(const std::string& name, TensorType type, std::vector<std::uint64_t> dims,
                  std::span<const std::uint8_t> data) {
    add_tensor(name, type_id(type), std::move(dims), data);
  }

  // Writes the file atomically; throws IoError naming the path.
  void write(const std::filesystem::path& path) const;
  // The bytes write() would produce (tests, small files).
  std::vector<std::uint8_t> bytes() const;

 private:
  struct Tensor {
    std::string name;
    std::uint32_t type_id;
    std::vector<std::uint64_t> dims;
    std::vector<std::uint8_t> data;
  };
  template <typename Sink>
  void emit(Sink& sink) const;

  std::uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace nanochat::gguf
