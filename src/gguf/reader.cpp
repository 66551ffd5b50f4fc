#include "nanochat/gguf/reader.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "nanochat/util/error.hpp"

namespace nanochat::gguf {
namespace {

constexpr int kMaxArrayDepth = 2;      // arrays of arrays at most (ggml writes none)
constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr std::uint64_t kMaxStringBytes = std::uint64_t{1} << 30;

// Bounds-checked little-endian cursor over the file's bytes.
class Cursor {
 public:
  Cursor(std::span<const std::uint8_t> bytes, const std::string& name)
      : bytes_(bytes), name_(name) {}

  std::uint64_t pos() const { return pos_; }
  std::uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail<FormatError>(
        "{}: {} (at byte {}); the file is not a valid GGUF file — re-download or "
        "re-export it",
        name_, fmt::format(format, std::forward<Args>(args)...), pos_);
  }

  void need(std::uint64_t n, const char* what) const {
    if (n > remaining()) {
      error("{} needs {} bytes but only {} remain (truncated file?)", what, n, remaining());
    }
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::vector<std::uint8_t> read_bytes(std::uint64_t n, const char* what) {
    need(n, what);
    std::vector<std::uint8_t> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                  bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return out;
  }

  std::string read_string(const char* what) {
    const auto len = read<std::uint64_t>(what);
    if (len > kMaxStringBytes) error("{} claims a length of {} bytes", what, len);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  std::span<const std::uint8_t> bytes_;
  const std::string& name_;
  std::uint64_t pos_ = 0;
};

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<std::size_t>(extra) >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}

Value read_value(Cursor& in, ValueType type, int depth);

Value read_array(Cursor& in, int depth) {
  if (depth >= kMaxArrayDepth) in.error("arrays nested more than {} deep", kMaxArrayDepth);
  const auto raw_type = in.read<std::uint32_t>("array element type");
  if (raw_type >= kValueTypeCount) in.error("unknown array element type {}", raw_type);
  const auto type = static_cast<ValueType>(raw_type);
  const auto count = in.read<std::uint64_t>("array length");
  // Every element occupies at least this many bytes, so the count cannot exceed what is left,
  // and what is stored per element is bounded by a small multiple of its bytes in the file.
  const std::uint64_t min_size =
      type == ValueType::kString ? 8 : (type == ValueType::kArray ? 12 : value_type_size(type));
  if (count > in.remaining() / min_size) {
    in.error("an array claims {} elements of type {} but the file has room for at most {}", count,
             value_type_name(type), in.remaining() / min_size);
  }
  Array a;
  a.type = type;
  if (type == ValueType::kString) {
    a.strings.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) a.strings.push_back(in.read_string("string element"));
  } else if (type == ValueType::kArray) {
    a.arrays.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) a.arrays.push_back(read_array(in, depth + 1));
  } else {
    const std::uint64_t bytes = count * min_size;
    a.raw = in.read_bytes(bytes, "array elements");
    if (type == ValueType::kBool) {
      for (std::uint8_t b : a.raw) {
        if (b > 1) in.error("a bool array element holds {}", b);
      }
    }
  }
  return Value(std::move(a));
}

Value read_value(Cursor& in, ValueType type, int depth) {
  switch (type) {
    case ValueType::kUint8:
      return Value(in.read<std::uint8_t>("uint8 value"));
    case ValueType::kInt8:
      return Value(in.read<std::int8_t>("int8 value"));
    case ValueType::kUint16:
      return Value(in.read<std::uint16_t>("uint16 value"));
    case ValueType::kInt16:
      return Value(in.read<std::int16_t>("int16 value"));
    case ValueType::kUint32:
      return Value(in.read<std::uint32_t>("uint32 value"));
    case ValueType::kInt32:
      return Value(in.read<std::int32_t>("int32 value"));
    case ValueType::kFloat32:
      return Value(in.read<float>("float32 value"));
    case ValueType::kBool: {
      const auto b = in.read<std::uint8_t>("bool value");
      if (b > 1) in.error("a bool holds {}", b);
      return Value(b == 1);
    }
    case ValueType::kString:
      return Value(in.read_string("string value"));
    case ValueType::kArray:
      return read_array(in, depth);
    case ValueType::kUint64:
      return Value(in.read<std::uint64_t>("uint64 value"));
    case ValueType::kInt64:
      return Value(in.read<std::int64_t>("int64 value"));
    case ValueType::kFloat64:
      return Value(in.read<double>("float64 value"));
  }
  in.error("unknown value type {}", static_cast<std::uint32_t>(type));
}

}  // namespace

std::uint64_t TensorInfo::elements() const {
  std::uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

std::string TensorInfo::shape() const {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

GgufFile GgufFile::open(const std::filesystem::path& path, const ReadOptions& options) {
  GgufFile f;
  f.file_.emplace(path);
  f.bytes_ = f.file_->bytes();
  f.name_ = path.string();
  f.parse_all(options);
  return f;
}

GgufFile GgufFile::parse(std::span<const std::uint8_t> bytes, std::string name,
                         const ReadOptions& options) {
  GgufFile f;
  f.bytes_ = bytes;
  f.name_ = std::move(name);
  f.parse_all(options);
  return f;
}

void GgufFile::parse_all(const ReadOptions& options) {
  Cursor in(bytes_, name_);
  if (bytes_.size() < 4)
    in.error("the file is {} bytes, too short for a GGUF header", bytes_.size());
  std::uint32_t magic = 0;
  std::memcpy(&magic, bytes_.data(), sizeof magic);
  if (magic != kMagic) {  // reported at byte 0, where the magic is
    in.error("bad magic 0x{:08x}; GGUF files start with the bytes 'GGUF'", magic);
  }
  (void)in.read<std::uint32_t>("magic");
  version_ = in.read<std::uint32_t>("version");
  if (version_ == 1) in.error("GGUF version 1 is no longer supported; convert the model again");
  if (version_ != 2 && version_ != 3) {
    if (version_ == 0x02000000 || version_ == 0x03000000) {
      in.error("the file is big-endian; nanochat reads little-endian GGUF only");
    }
    in.error("unsupported GGUF version {} (nanochat reads versions 2 and 3)", version_);
  }
  const auto tensor_count = in.read<std::uint64_t>("tensor count");
  const auto kv_count = in.read<std::uint64_t>("metadata count");
  // A key-value pair takes at least 8 + 4 + 1 bytes, a tensor info at least 8 + 4 + 8 + 4 + 8.
  if (kv_count > in.remaining() / 13) {
    in.error("the header claims {} metadata entries but the file has room for at most {}", kv_count,
             in.remaining() / 13);
  }
  if (tensor_count > in.remaining() / 32) {
    in.error("the header claims {} tensors but the file has room for at most {}", tensor_count,
             in.remaining() / 32);
  }

  std::unordered_set<std::string> keys;
  metadata_.reserve(kv_count);
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.read_string("metadata key");
    if (key.empty()) in.error("metadata entry {} has an empty key", i);
    if (!valid_utf8(key)) in.error("metadata key {} is not valid UTF-8", i);
    if (!keys.insert(key).second) in.error("metadata key '{}' appears twice", key);
    const auto raw_type = in.read<std::uint32_t>("metadata value type");
    if (raw_type >= kValueTypeCount) in.error("metadata '{}' has unknown type {}", key, raw_type);
    Value v = read_value(in, static_cast<ValueType>(raw_type), 0);
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    const auto* align = a->get_if<std::uint32_t>();
    if (align == nullptr)
      in.error("general.alignment must be a uint32, not {}", value_type_name(a->type()));
    if (*align == 0 || (*align & (*align - 1)) != 0 || *align > (1u << 20)) {
      in.error("general.alignment {} is not a power of two up to 1 MiB", *align);
    }
    alignment_ = *align;
  }
  if (const Value* a = find("general.architecture")) {
    if (a->as_string() == nullptr) in.error("general.architecture must be a string");
    architecture_ = *a->as_string();
  }

  std::unordered_set<std::string> names;
  tensors_.reserve(tensor_count);
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    TensorInfo t;
    t.name = in.read_string("tensor name");
    if (t.name.empty() || !valid_utf8(t.name))
      in.error("tensor {} has an empty or non-UTF-8 name", i);
    if (!names.insert(t.name).second) in.error("tensor '{}' appears twice", t.name);
    const auto n_dims = in.read<std::uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) {
      in.error("tensor '{}' has {} dimensions; GGUF allows 1 to {}", t.name, n_dims, kMaxDims);
    }
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      t.dims.push_back(in.read<std::uint64_t>("tensor dimension"));
    }
    const auto id = in.read<std::uint32_t>("tensor type");
    const auto type = tensor_type_info(id, architecture_);
    if (!type) {
      in.error("tensor '{}' has type id {}, which ggml does not define{}", t.name, id,
               id == type_id(TensorType::kI2_S) ? " outside BitNet architectures (I2_S)" : "");
    }
    if (!type->supported && !options.allow_unsupported_types) {
      fail<FormatError>(
          "{}: tensor '{}' has type {} (id {}), which nanochat cannot run in "
          "architecture '{}'; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, "
          "Q5_K, Q6_K (embeddings and output heads), TQ1_0, TQ2_0 (and I2_S for BitNet) — "
          "re-quantize the model to one of them",
          name_, t.name, type->name, id, architecture_.empty() ? "unknown" : architecture_);
    }
    t.type = *type;
    const auto bytes = tensor_bytes(t.type, t.dims);
    if (!bytes) {
      in.error(
          "tensor '{}' of type {} has shape [{}], which is not a whole number of {}-element "
          "blocks or overflows",
          t.name, t.type.name, t.shape(), t.type.block);
    }
    t.bytes = *bytes;
    t.offset = in.read<std::uint64_t>("tensor offset");
    if (t.offset % alignment_ != 0) {
      in.error("tensor '{}' starts at offset {}, not a multiple of the alignment {}", t.name,
               t.offset, alignment_);
    }
    tensors_.push_back(std::move(t));
  }

  const std::uint64_t header_end = in.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const std::uint64_t size = bytes_.size();
  if (tensor_count > 0 && data_offset_ > size) {
    in.error("the tensor data section would start at byte {}, past the end of the {}-byte file",
             data_offset_, size);
  }
  const std::uint64_t data_size = size > data_offset_ ? size - data_offset_ : 0;
  std::vector<const TensorInfo*> by_offset;
  // An I2_S tensor is its 2-bit weights and then 32 bytes whose first 4 hold its fp32 scale
  // (bitnet.cpp's ggml_nbytes: n/4 + 32); a writer that forgets them leaves the weights whole
  // and the scale missing, which deserves its own message.
  constexpr std::uint64_t kI2sTrailer = 32;
  const auto i2s_weights_fit = [](const TensorInfo& t, std::uint64_t room) {
    return t.type.is(TensorType::kI2_S) && t.bytes >= kI2sTrailer && t.bytes - kI2sTrailer <= room;
  };
  for (const TensorInfo& t : tensors_) {
    if (t.offset <= data_size && t.bytes > data_size - t.offset &&
        i2s_weights_fit(t, data_size - t.offset)) {
      fail<FormatError>(
          "{}: I2_S tensor '{}' ends {} bytes short: its scale (the 32 bytes after its {} bytes of "
          "2-bit weights) is missing; the file is truncated or was written without it",
          name_, t.name, t.bytes - (data_size - t.offset), t.bytes - kI2sTrailer);
    }
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      fail<FormatError>(
          "{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the "
          "file ({} bytes of tensor data); the file is truncated — re-download it",
          name_, t.name, t.bytes, t.offset, data_size);
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    if (prev.offset + prev.bytes > by_offset[i]->offset &&
        i2s_weights_fit(prev, by_offset[i]->offset - prev.offset)) {
      fail<FormatError>(
          "{}: I2_S tensor '{}' has no room for its scale (the 32 bytes after its {} bytes of "
          "2-bit weights) before tensor '{}'; the file was written without the I2_S scales",
          name_, prev.name, prev.bytes - kI2sTrailer, by_offset[i]->name);
    }
    if (prev.offset + prev.bytes > by_offset[i]->offset) {
      fail<FormatError>(
          "{}: tensors '{}' and '{}' overlap in the file; it is not a valid GGUF file", name_,
          prev.name, by_offset[i]->name);
    }
  }
}

const Value* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

namespace {
[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const Value& v,
                             const char* want) {
  fail<FormatError>("{}: metadata '{}' is a {}, expected {}", file, key, value_type_name(v.type()),
                    want);
}
}  // namespace

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->as_string() == nullptr) wrong_type(name_, key, *v, "a string");
  return *v->as_string();
}

std::optional<std::int64_t> GgufFile::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto i = v->as_int();
  if (!i) {
    if (const auto* big = v->get_if<std::uint64_t>()) {
      fail<FormatError>("{}: metadata '{}' is {}, beyond any size nanochat accepts", name_, key,
                        *big);
    }
    wrong_type(name_, key, *v, "an integer");
  }
  return i;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto d = v->as_double();
  if (!d) wrong_type(name_, key, *v, "a number");
  return d;
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  const bool* b = v->get_if<bool>();
  if (b == nullptr) wrong_type(name_, key, *v, "a bool");
  return *b;
}

const Array* GgufFile::get_array(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return nullptr;
  if (v->as_array() == nullptr) wrong_type(name_, key, *v, "an array");
  return v->as_array();
}

namespace {
[[noreturn]] void wrong_elements(const std::string& file, std::string_view key, const Array& a,
                                 const char* want) {
  fail<FormatError>("{}: metadata '{}' is an array of {}, expected an array of {}", file, key,
                    value_type_name(a.type), want);
}

bool is_integer_type(ValueType t) {
  return t != ValueType::kFloat32 && t != ValueType::kFloat64 && t != ValueType::kBool &&
         t != ValueType::kString && t != ValueType::kArray;
}
}  // namespace

const std::vector<std::string>* GgufFile::get_string_array(std::string_view key) const {
  const Array* a = get_array(key);
  if (a == nullptr) return nullptr;
  if (a->type != ValueType::kString) wrong_elements(name_, key, *a, "strings");
  return &a->strings;
}

std::optional<std::vector<std::int64_t>> GgufFile::get_int_array(std::string_view key) const {
  const Array* a = get_array(key);
  if (a == nullptr) return std::nullopt;
  if (!is_integer_type(a->type)) wrong_elements(name_, key, *a, "integers");
  std::vector<std::int64_t> out;
  out.reserve(a->size());
  for (std::size_t i = 0; i < a->size(); ++i) {
    const auto v = a->at(i).as_int();
    if (!v) {
      fail<FormatError>("{}: metadata '{}' element {} does not fit in a 64-bit integer", name_, key,
                        i);
    }
    out.push_back(*v);
  }
  return out;
}

std::optional<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  const Array* a = get_array(key);
  if (a == nullptr) return std::nullopt;
  if (a->type != ValueType::kFloat32 && a->type != ValueType::kFloat64 &&
      !is_integer_type(a->type)) {
    wrong_elements(name_, key, *a, "numbers");
  }
  return a->to_vector<float>();
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

void GgufFile::release(const TensorInfo& tensor) const { release(tensor_data(tensor)); }

void GgufFile::release(std::span<const std::uint8_t> bytes) const {
  if (!file_ || bytes.empty()) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data());
  const std::uintptr_t first = (begin + page - 1) / page * page;  // whole pages inside only
  const std::uintptr_t last = (begin + bytes.size()) / page * page;
  if (last > first) {
    // The pointer at `first`, derived from the span's own (not cast from the integer).
    (void)::madvise(const_cast<std::uint8_t*>(bytes.data() + (first - begin)), last - first,
                    MADV_DONTNEED);
  }
}

std::span<const std::uint8_t> GgufFile::tensor_data(const TensorInfo& tensor) const {
  return bytes_.subspan(data_offset_ + tensor.offset, tensor.bytes);
}

}  // namespace nanochat::gguf
