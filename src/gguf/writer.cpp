#include "nanochat/gguf/writer.hpp"

#include <cstring>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::gguf {
namespace {

// Serialises into a byte buffer; the writer flushes it to the file in pieces.
struct Buffer {
  std::vector<std::uint8_t> bytes;
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<std::uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void put_bytes(std::span<const std::uint8_t> b) { bytes.insert(bytes.end(), b.begin(), b.end()); }
};

void put_value(Buffer& out, const Value& v);

void put_array(Buffer& out, const Array& a) {
  out.put<std::uint32_t>(static_cast<std::uint32_t>(a.type));
  out.put<std::uint64_t>(a.size());
  if (a.type == ValueType::kString) {
    for (const auto& s : a.strings) out.put_string(s);
  } else if (a.type == ValueType::kArray) {
    for (const auto& nested : a.arrays) put_array(out, *nested.as_array());
  } else {
    out.put_bytes(a.raw);
  }
}

void put_value(Buffer& out, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          out.put_string(x);
        } else if constexpr (std::is_same_v<T, std::shared_ptr<const Array>>) {
          put_array(out, *x);
        } else if constexpr (std::is_same_v<T, bool>) {
          out.put<std::uint8_t>(x ? 1 : 0);
        } else {
          out.put<T>(x);
        }
      },
      v.storage());
}

std::uint64_t padding(std::uint64_t offset, std::uint32_t alignment) {
  return (alignment - offset % alignment) % alignment;
}

}  // namespace

GgufWriter::GgufWriter(std::uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    fail("GGUF alignment {} is not a power of two", alignment);
  }
  if (alignment != kDefaultAlignment) set("general.alignment", Value(alignment));
}

void GgufWriter::set(const std::string& key, Value value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::uint32_t type_id,
                            std::vector<std::uint64_t> dims, std::span<const std::uint8_t> data) {
  for (const Tensor& t : tensors_) {
    if (t.name == name) fail("GGUF writer: tensor '{}' added twice", name);
  }
  std::string arch;
  for (const auto& [k, v] : metadata_) {
    if (k == "general.architecture" && v.as_string()) arch = *v.as_string();
  }
  const auto type = tensor_type_info(type_id, arch);
  if (!type) fail("GGUF writer: tensor '{}' has unknown type id {}", name, type_id);
  const auto bytes = tensor_bytes(*type, dims);
  if (!bytes || *bytes != data.size()) {
    fail("GGUF writer: tensor '{}' of type {} and {} dims needs {} bytes, got {}", name, type->name,
         dims.size(), bytes ? *bytes : 0, data.size());
  }
  tensors_.push_back(Tensor{name, type_id, std::move(dims), {data.begin(), data.end()}});
}

template <typename Sink>
void GgufWriter::emit(Sink& sink) const {
  Buffer header;
  header.put<std::uint32_t>(kMagic);
  header.put<std::uint32_t>(3);
  header.put<std::uint64_t>(tensors_.size());
  header.put<std::uint64_t>(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    header.put_string(key);
    header.put<std::uint32_t>(static_cast<std::uint32_t>(value.type()));
    put_value(header, value);
  }
  std::uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    header.put_string(t.name);
    header.put<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size()));
    for (auto d : t.dims) header.put<std::uint64_t>(d);
    header.put<std::uint32_t>(t.type_id);
    header.put<std::uint64_t>(offset);
    offset += t.data.size() + padding(t.data.size(), alignment_);
  }
  header.bytes.resize(header.bytes.size() + padding(header.bytes.size(), alignment_), 0);
  sink(std::span<const std::uint8_t>(header.bytes));
  const std::vector<std::uint8_t> zeros(alignment_, 0);
  for (const Tensor& t : tensors_) {
    sink(std::span<const std::uint8_t>(t.data));
    sink(std::span<const std::uint8_t>(zeros.data(), padding(t.data.size(), alignment_)));
  }
}

void GgufWriter::write(const std::filesystem::path& path) const {
  AtomicFile file(path);
  auto sink = [&](std::span<const std::uint8_t> b) { file.write(b); };
  emit(sink);
  file.commit();
}

std::vector<std::uint8_t> GgufWriter::bytes() const {
  std::vector<std::uint8_t> out;
  auto sink = [&](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); };
  emit(sink);
  return out;
}

}  // namespace nanochat::gguf
