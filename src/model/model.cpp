#include "nanochat/model/model.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>

#include "nanochat/gguf/dequant.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/kernels/kquant.hpp"
#include "nanochat/kernels/q8.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/model/weight_cache.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"
#include "nanochat/util/units.hpp"

namespace nanochat::model {
namespace {

// Ternary tensor rows for packing: decodes one row (TQ2_0, TQ1_0 or I2_S) into trits and
// returns its scale. Every error names the file, the tensor and the row: a 2-bit code 3, a scale
// that is NaN, infinite or negative, a zero scale over non-zero weights (no quantizer writes
// one: ggml's gives a block of zeros the scale 0), and blocks of one row with different scales
// (nanochat keeps one scale per row; blocks of zeros, whatever their scale, do not count).
struct TernarySource {
  const gguf::GgufFile& file;
  const gguf::TensorInfo& info;
  std::span<const std::uint8_t> data;
  std::int64_t cols;
  float i2s_scale = 0;

  template <typename... Args>
  [[noreturn]] void error(std::int64_t row, fmt::format_string<Args...> format,
                          Args&&... args) const {
    fail<FormatError>("{}: tensor '{}' row {}: {}", file.name(), info.name, row,
                      fmt::format(format, std::forward<Args>(args)...));
  }

  // `scale` of the weights `trits`: finite, not negative, zero only over zeros.
  void check_scale(std::int64_t row, float scale, std::span<const std::int8_t> trits,
                   const char* what) const {
    const char* corrupt = "the tensor data is corrupt";
    if (std::isnan(scale)) error(row, "{} is NaN; {}", what, corrupt);
    if (std::isinf(scale)) error(row, "{} is infinite; {}", what, corrupt);
    if (scale < 0) error(row, "{} is negative ({}); {}", what, scale, corrupt);
    if (scale == 0 && std::any_of(trits.begin(), trits.end(), [](std::int8_t t) { return t; })) {
      error(row, "{} is 0 but its weights are not all 0; {}", what, corrupt);
    }
  }

  float decode_row(std::int64_t row, std::span<std::int8_t> trits) const {
    const bool tq2 = info.type.is(gguf::TensorType::kTQ2_0);
    if (tq2 || info.type.is(gguf::TensorType::kTQ1_0)) {
      const std::size_t row_bytes = tq2 ? ternary::tq2_0_bytes(cols) : ternary::tq1_0_bytes(cols);
      const auto bytes = data.subspan(static_cast<std::size_t>(row) * row_bytes, row_bytes);
      std::vector<float> scales(static_cast<std::size_t>(cols / ternary::kQkK));
      try {
        if (tq2) {
          ternary::decode_tq2_0(bytes, trits, scales);
        } else {
          ternary::decode_tq1_0(bytes, trits, scales);
        }
      } catch (const FormatError& e) {
        error(row, "{}", e.what());
      }
      std::optional<float> row_scale;
      for (std::size_t b = 0; b < scales.size(); ++b) {
        const auto block = trits.subspan(b * ternary::kQkK, ternary::kQkK);
        check_scale(row, scales[b], block, "a block scale");
        if (std::all_of(block.begin(), block.end(), [](std::int8_t t) { return t == 0; })) {
          continue;  // contributes nothing, whatever its scale
        }
        if (!row_scale) row_scale = scales[b];
        if (scales[b] != *row_scale) {
          error(row,
                "its blocks have different scales ({} and {}); nanochat needs one scale per "
                "row",
                *row_scale, scales[b]);
        }
      }
      return row_scale.value_or(0.0f);
    }
    // I2_S: 128-weight groups along the flattened tensor, one scale for all of it.
    try {
      ternary::decode_i2_s_range(data, row * cols, trits);
    } catch (const FormatError& e) {
      error(row, "{}", e.what());
    }
    check_scale(row, i2s_scale, trits, "the I2_S tensor scale");
    return i2s_scale;
  }

  // Row `row` as 2-bit codes in the kTq2 order (kernels::CodeSource) and its scale, with
  // decode_row's checks and errors, found in the same order. TQ2_0 bytes already are those codes:
  // each block's 64 are checked a word at a time and copied, with no per-weight work. Thread-safe.
  float code_row(std::int64_t row, std::span<std::uint8_t> codes) const {
    if (!info.type.is(gguf::TensorType::kTQ2_0)) {
      std::vector<std::int8_t> trits(static_cast<std::size_t>(cols));
      const float scale = decode_row(row, trits);
      kernels::trits_to_tq2_codes(trits, codes);
      return scale;
    }
    constexpr std::uint64_t kLow = 0x5555555555555555u;  // the low bit of every 2-bit code
    constexpr std::size_t kQs = 64;                      // code bytes of a block, then fp16 d
    const auto blocks = static_cast<std::size_t>(cols / ternary::kQkK);
    const std::uint8_t* bytes =
        data.data() + static_cast<std::size_t>(row) * blocks * ternary::kTq2BlockBytes;
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::uint8_t* qs = bytes + b * ternary::kTq2BlockBytes;
      std::uint64_t three = 0;  // code 3: both bits of a field set
      for (std::size_t i = 0; i < kQs; i += 8) {
        std::uint64_t x = 0;
        std::memcpy(&x, qs + i, 8);
        three |= x & (x >> 1) & kLow;
      }
      if (three != 0) {
        error(row,
              "TQ2_0 block {} holds the 2-bit code 3, which is not a ternary weight; the tensor "
              "data is corrupt",
              b);
      }
      std::memcpy(codes.data() + b * kQs, qs, kQs);
    }
    const char* corrupt = "the tensor data is corrupt";
    std::optional<float> row_scale;
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::uint8_t* qs = bytes + b * ternary::kTq2BlockBytes;
      std::uint16_t h = 0;
      std::memcpy(&h, qs + kQs, 2);
      const float scale = fp16_to_fp32(h);
      bool zeros = true;  // every code 1 (weight 0)
      for (std::size_t i = 0; i < kQs; i += 8) {
        std::uint64_t x = 0;
        std::memcpy(&x, qs + i, 8);
        zeros = zeros && x == kLow;
      }
      // check_scale's checks, in its order
      if (std::isnan(scale)) error(row, "a block scale is NaN; {}", corrupt);
      if (std::isinf(scale)) error(row, "a block scale is infinite; {}", corrupt);
      if (scale < 0) error(row, "a block scale is negative ({}); {}", scale, corrupt);
      if (scale == 0 && !zeros) {
        error(row, "a block scale is 0 but its weights are not all 0; {}", corrupt);
      }
      if (zeros) continue;  // contributes nothing, whatever its scale
      if (!row_scale) row_scale = scale;
      if (scale != *row_scale) {
        error(row, "its blocks have different scales ({} and {}); nanochat needs one scale per row",
              *row_scale, scale);
      }
    }
    return row_scale.value_or(0.0f);
  }
};

// The types dequantize_rows reads: embeddings, gains and float or block-quantized heads (F32,
// F16, BF16, Q8_0, and llama.cpp's Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
bool is_float_type(const gguf::TensorTypeInfo& type) { return gguf::is_dequantizable(type.id); }

const gguf::TensorInfo& need_tensor(const gguf::GgufFile& f, const std::string& name) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (t == nullptr) fail<FormatError>("{}: tensor '{}' is missing", f.name(), name);
  return *t;
}

void check_shape(const gguf::GgufFile& f, const gguf::TensorInfo& t,
                 std::vector<std::uint64_t> want) {
  if (t.dims != want) {
    std::string w;
    for (std::size_t i = 0; i < want.size(); ++i) w += (i ? " x " : "") + std::to_string(want[i]);
    fail<FormatError>("{}: tensor '{}' has shape {}, expected {}", f.name(), t.name, t.shape(), w);
  }
}

// Values a layer multiplies by (norm gains, mHC parameters, layer scales) must be finite: one
// NaN or infinity turns every later activation into NaN, which would sample garbage silently.
void check_finite(const gguf::GgufFile& f, const std::string& name, std::span<const float> v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      fail<FormatError>("{}: tensor '{}' holds {} at element {}; the tensor data is corrupt",
                        f.name(), name, v[i], i);
    }
  }
}

struct TernaryPart {
  std::string name;
  std::int64_t out;  // rows
  // Q and K of a model whose RoPE rotates (i, i + head_dim/2) together (NeoX): each head's rows
  // are read in the order of the (2i, 2i+1) layout instead, so that the forward pass always
  // rotates adjacent pairs and sums q.k over the head's dimensions in one order for every
  // architecture (the trainer's, whose exports are then bit-exact). The same rotation either way.
  std::int64_t halves_head_dim = 0;
};

// The file row that holds row `row` of the adjacent-pair layout, for heads of `d` dimensions
// stored in the half-split layout: dimension 2i is i, dimension 2i+1 is i + d/2.
std::int64_t halves_row(std::int64_t row, std::int64_t d) {
  const std::int64_t head = row / d, a = row % d;
  return head * d + (a % 2 == 0 ? a / 2 : d / 2 + a / 2);
}

// Packs the ternary tensors `parts` (each [in, out_i]) as one matrix with their rows stacked in
// order — Q, K and V, or gate and up, which read the same input, become one GEMV per token.
kernels::PackedMatrix load_ternary(const gguf::GgufFile& f, kernels::KernelContext& ctx,
                                   const std::vector<TernaryPart>& parts, std::int64_t in) {
  std::vector<TernarySource> sources;
  std::vector<float> extras;
  std::vector<std::int64_t> first_row;
  std::int64_t rows = 0;
  for (const TernaryPart& part : parts) {
    const gguf::TensorInfo& t = need_tensor(f, part.name);
    check_shape(f, t, {static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(part.out)});
    const bool i2s = t.type.is(gguf::TensorType::kI2_S);
    if (!i2s && !t.type.is(gguf::TensorType::kTQ1_0) && !t.type.is(gguf::TensorType::kTQ2_0)) {
      fail<FormatError>(
          "{}: tensor '{}' has type {}; nanochat's linear layers are ternary (TQ2_0, "
          "TQ1_0 or I2_S)",
          f.name(), part.name, t.type.name);
    }
    TernarySource src{f, t, f.tensor_data(t), in};
    if (i2s) {
      std::memcpy(&src.i2s_scale, src.data.data() + in * part.out / 4, sizeof(float));
    }
    // llama.cpp's bitnet layout may carry a one-value `.scale` tensor that multiplies the output.
    float extra = 1.0f;
    const std::string scale_name = tensors::scale_of(part.name);
    if (f.find_tensor(scale_name) != nullptr) {
      const std::vector<float> s = dequantize_tensor(f, scale_name);
      if (s.size() != 1) {
        fail<FormatError>("{}: tensor '{}' has {} values; a layer scale has one", f.name(),
                          scale_name, s.size());
      }
      check_finite(f, scale_name, s);
      extra = s[0];
    }
    sources.push_back(src);
    extras.push_back(extra);
    first_row.push_back(rows);
    rows += part.out;
  }
  std::vector<float> scales(static_cast<std::size_t>(rows));
  // Rows are repacked on every thread of the pool, each row's scale written by its own thread.
  kernels::PackedMatrix m =
      ctx.pack_codes(rows, in, [&](std::int64_t row, std::span<std::uint8_t> codes) {
        std::size_t i = parts.size() - 1;
        while (row < first_row[i]) --i;
        std::int64_t source_row = row - first_row[i];
        if (parts[i].halves_head_dim > 0) {
          source_row = halves_row(source_row, parts[i].halves_head_dim);
        }
        scales[static_cast<std::size_t>(row)] = sources[i].code_row(source_row, codes) * extras[i];
      });
  m.row_scales = std::move(scales);
  for (const auto& src : sources) f.release(src.info);  // repacked: the mapped copies may go
  return m;
}

kernels::PackedMatrix load_ternary(const gguf::GgufFile& f, kernels::KernelContext& ctx,
                                   const std::string& name, std::int64_t in, std::int64_t out) {
  return load_ternary(f, ctx, {{name, out}}, in);
}

std::vector<float> load_vector(const gguf::GgufFile& f, const std::string& name, std::int64_t n) {
  const gguf::TensorInfo& t = need_tensor(f, name);
  check_shape(f, t, {static_cast<std::uint64_t>(n)});
  std::vector<float> v = dequantize_tensor(f, name);
  check_finite(f, name, v);
  return v;
}

mhc::MhcParams load_mhc(const gguf::GgufFile& f, const std::string& name, int n) {
  if (n == 1) return mhc::MhcParams::identity(1);
  const std::vector<float> v =
      load_vector(f, name, static_cast<std::int64_t>(mhc::packed_layout(n).size));
  try {
    return mhc::unpack(v, n);
  } catch (const Error& e) {
    fail<FormatError>("{}: tensor '{}': {}", f.name(), name, e.what());
  }
}

void rms_norm(const float* x, const float* w, float* out, std::int64_t n, float eps) {
  const float inv = kernels::rms_inverse(x, n, eps);
  for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

// Bumped whenever what a packed matrix holds for the same file and plan changes (layouts, how
// scales or rows are arranged): older cache files then stop matching.
constexpr int kPackingVersion = 1;

// One matrix of the repacked-weights cache: its shape and the plan it was packed for.
struct CachedMatrix {
  std::int64_t rows = 0, cols = 0;
  kernels::Plan plan;

  std::int64_t tiles() const { return (rows + plan.tile_rows - 1) / plan.tile_rows; }
  std::uint64_t code_bytes() const {
    return static_cast<std::uint64_t>(
        tiles() * plan.tile_rows * kernels::layout_units(plan.layout, cols) * kernels::kChunkBytes);
  }
  // The matrix over the cache's blobs: codes borrowed from the mapping, scales copied.
  kernels::PackedMatrix view(std::span<const std::uint8_t> codes,
                             std::span<const std::uint8_t> scales) const {
    kernels::PackedMatrix m;
    m.rows = rows;
    m.cols = cols;
    m.chunks = kernels::layout_units(plan.layout, cols);
    m.tile_rows = plan.tile_rows;
    m.tiles = tiles();
    m.isa = plan.isa;
    m.layout = plan.layout;
    m.variant = plan.variant;
    m.codes = AlignedBuffer<std::uint8_t>::borrowed(codes.data(), codes.size());
    m.row_scales.resize(static_cast<std::size_t>(rows));
    std::memcpy(m.row_scales.data(), scales.data(), scales.size());
    return m;
  }
};

std::span<const std::uint8_t> bytes_of(const kernels::PackedMatrix& m) {
  return {m.codes.data(), m.codes.bytes()};
}
std::span<const std::uint8_t> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const std::uint8_t*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

void dequantize_rows(std::uint32_t type, std::span<const std::uint8_t> data, std::size_t first,
                     std::span<float> out) {
  gguf::dequantize(type, data, first, out);
}

std::vector<std::uint8_t> encode_ternary(gguf::TensorType type, std::span<const std::int8_t> trits,
                                         float scale) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::vector<float> scales(trits.size() / static_cast<std::size_t>(ternary::kQkK), scale);
  if (type == gguf::TensorType::kTQ2_0) {
    std::vector<std::uint8_t> out(ternary::tq2_0_bytes(n));
    ternary::encode_tq2_0(trits, scales, out);
    return out;
  }
  if (type != gguf::TensorType::kTQ1_0) {
    fail("encode_ternary: type {} is not TQ1_0 or TQ2_0", gguf::type_id(type));
  }
  std::vector<std::uint8_t> out(ternary::tq1_0_bytes(n));
  ternary::encode_tq1_0(trits, scales, out);
  return out;
}

std::vector<float> dequantize_tensor(const gguf::GgufFile& f, const std::string& name) {
  const gguf::TensorInfo& t = need_tensor(f, name);
  if (!is_float_type(t.type)) {
    fail<FormatError>(
        "{}: tensor '{}' has type {}; expected F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
        "Q4_K, Q5_K or Q6_K",
        f.name(), name, t.type.name);
  }
  std::vector<float> out(static_cast<std::size_t>(t.elements()));
  dequantize_rows(t.type.id, f.tensor_data(t), 0, out);
  return out;
}

double KvCache::bytes_for(const ModelConfig& c, std::int64_t capacity) {
  return c.kv_cache_bytes(capacity);
}

double KvCache::memory_limit() {
  return static_cast<double>(::sysconf(_SC_PHYS_PAGES)) *
         static_cast<double>(::sysconf(_SC_PAGE_SIZE));
}

std::int64_t KvCache::resolve_capacity(const ModelConfig& c, std::int64_t requested) {
  if (requested < 0) fail_argument("context", requested, "must hold at least one token");
  const bool from_file = requested == 0;
  const std::int64_t capacity = from_file ? c.context_length : requested;
  // In double: no value of `capacity` (a flag) or of the model's shape (a file) can wrap it.
  const double bytes = bytes_for(c, capacity);
  const double memory = memory_limit();
  if (from_file) {
    // ModelConfig::validate() bounded context_length already; memory is this machine's limit.
    if (capacity <= 0 || bytes > memory) {
      fail<FormatError>(
          "{}: {} is {}: its KV cache would need {}, more than this machine's {} of memory; "
          "pass a smaller context with -c",
          c.source_file.empty() ? "the model" : c.source_file, c.context_key(), capacity,
          format_bytes(bytes), format_bytes(memory));
    }
    return capacity;
  }
  if (capacity > ModelConfig::kMaxContextLength) {
    fail_argument("context", capacity,
                  "more than the {} tokens nanochat supports (its KV cache would need {}); use "
                  "a smaller context (the model was trained for {})",
                  ModelConfig::kMaxContextLength, format_bytes(bytes), c.context_length);
  }
  if (bytes > memory) {
    fail_argument("context", capacity,
                  "its KV cache would need {}, more than this machine's {} of memory; use a "
                  "smaller context (the model was trained for {})",
                  format_bytes(bytes), format_bytes(memory), c.context_length);
  }
  return capacity;
}

KvCache::KvCache(const ModelConfig& c, std::int64_t capacity)
    : capacity_(resolve_capacity(c, capacity)), kv_dim_(c.kv_dim()) {
  // Bounded by resolve_capacity(): the product fits in memory, let alone in size_t.
  const auto size = static_cast<std::size_t>(c.n_layers * capacity_ * kv_dim_);
  // Not zeroed: only positions already written are read, and untouched pages of a large cache
  // cost no memory until the sequence reaches them.
  k_.reset(new float[size]);
  v_.reset(new float[size]);
}

struct Model::Weights {
  // The repacked-weights cache file the matrices below borrow their codes from, when they were
  // read from one.
  std::optional<WeightCache> cache;
  ModelConfig config;
  // token_embd rows, read from the mapped file on lookup (F32, F16, BF16 or Q8_0)
  std::uint32_t embedding_type = 0;
  std::span<const std::uint8_t> embedding;
  struct Layer {
    std::vector<float> attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm;
    kernels::PackedMatrix wqkv;      // Q, K and V rows stacked: one pass over the input
    kernels::PackedMatrix w_gateup;  // gate and up rows stacked
    kernels::PackedMatrix wo, w_down;
    mhc::MhcParams attn_mhc, ffn_mhc;
    std::vector<float> attn_h, ffn_h;  // their residual matrices
  };
  std::vector<Layer> layers;
  std::vector<float> output_norm;
  kernels::PackedMatrix output;  // ternary head
  // Q8_0 head: a Q8_0 output.weight as BitNet files carry it, or a float output.weight or tied
  // embedding quantized to Q8_0 at load (a third of a 2B model's bytes; 8 bits keep it exact
  // enough and halve what F16 would stream).
  std::optional<kernels::Q8Matrix> output_q8;
  // A Q6_K or Q4_K head (as llama-quantize writes them), or Q5_K, Q4_0, Q4_1, Q5_0, Q5_1, kept
  // in the file's blocks for the block kernels (kquant.hpp): 4.5 to 6.56 bits per weight
  // streamed per token, not Q8_0's 8.5.
  std::optional<kernels::KQuantMatrix> output_kq;
};

Model::Model(std::unique_ptr<Weights> w, kernels::KernelContext& kernels)
    : w_(std::move(w)), kernels_(kernels) {}
Model::~Model() = default;
const ModelConfig& Model::config() const { return w_->config; }

std::size_t Model::bytes_per_token() const {
  std::size_t bytes = 0;
  for (const auto& l : w_->layers) {
    for (const auto* m : {&l.wqkv, &l.wo, &l.w_gateup, &l.w_down}) {
      bytes += m->weight_bytes();
    }
  }
  if (w_->output_q8) {
    bytes += w_->output_q8->q.size() + w_->output_q8->d.size() * sizeof(std::uint16_t);
  } else if (w_->output_kq) {
    bytes += w_->output_kq->data.size();
  } else {
    bytes += w_->output.weight_bytes();
  }
  return bytes;
}

std::unique_ptr<Model> Model::load(const gguf::GgufFile& f, kernels::KernelContext& ctx,
                                   const LoadProgress& progress,
                                   const std::filesystem::path& weight_cache) {
  std::uint64_t total = 0;
  for (const gguf::TensorInfo& t : f.tensors()) total += t.bytes;
  // Layers and the head are the work; each reports the bytes of the tensors it read.
  std::uint64_t done = 0;
  const auto report = [&](std::initializer_list<std::string> names) {
    for (const std::string& name : names) {
      if (const gguf::TensorInfo* t = f.find_tensor(name)) done += t->bytes;
    }
    if (progress) progress(std::min(done, total), total);
  };
  auto w = std::make_unique<Weights>();
  ModelConfig& c = w->config;
  c = ModelConfig::from_gguf(f);
  const gguf::TensorInfo& emb = need_tensor(f, tensors::kEmbedding);
  check_shape(f, emb,
              {static_cast<std::uint64_t>(c.dim), static_cast<std::uint64_t>(c.vocab_size)});
  if (!is_float_type(emb.type)) {
    fail<FormatError>(
        "{}: tensor 'token_embd.weight' has type {}; nanochat reads F32, F16, BF16, Q8_0, Q4_0, "
        "Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K embeddings",
        f.name(), emb.type.name);
  }
  if (c.dim % emb.type.block != 0) {  // rows are read a whole block at a time
    fail<FormatError>(
        "{}: tensor 'token_embd.weight' has type {}, whose {}-value blocks do not divide its "
        "rows of {} values",
        f.name(), emb.type.name, emb.type.block, c.dim);
  }
  w->embedding_type = emb.type.id;
  w->embedding = f.tensor_data(emb);

  // The repacked-weights cache: every matrix's plan is known before any tensor is read, so the
  // key names the file (path, size, modification time, inode), the CPU and each layout, and a
  // file that matches is mapped instead of repacking. A head that is neither Q8_0-able nor
  // ternary, or a missing one, leaves the cache alone (the load below names the problem).
  std::vector<CachedMatrix> cached;
  std::vector<std::uint64_t> blob_sizes;
  std::string cache_key;
  const gguf::TensorInfo* cache_head =
      f.find_tensor(c.tied_embeddings ? tensors::kEmbedding : tensors::kOutput);
  // A head in a block type with head kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) is read
  // from the file on every load (a copy at memory speed); the cache holds the other heads'
  // repacked forms. (Rows that are not whole blocks cannot be: the tensor's shape check names
  // them.)
  kernels::KQuantType kq_type{};
  const bool kq_head = cache_head != nullptr &&
                       kernels::kquant_from_ggml(cache_head->type.id, kq_type) &&
                       c.dim % kernels::kquant_block_weights(kq_type) == 0;
  const bool q8_head =
      cache_head != nullptr && !kq_head &&
      (cache_head->type.is(gguf::TensorType::kQ8_0) || is_float_type(cache_head->type));
  struct stat st {};  // an opened file's name is its path
  const bool use_cache = !weight_cache.empty() && cache_head != nullptr && c.dim % 32 == 0 &&
                         ::stat(f.name().c_str(), &st) == 0;
  if (use_cache) {
    cache_key = fmt::format(
        "nanochat repacked weights, packing {}\nfile {}\n{} bytes, modified {}.{:09}, device {} "
        "inode {}\ncpu {}\n",
        kPackingVersion, std::filesystem::absolute(f.name()).string(), st.st_size,
        st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_dev, st.st_ino, cpu_info().signature());
    const auto add = [&](std::int64_t rows, std::int64_t cols) {
      CachedMatrix m{rows, cols, ctx.plan(rows, cols, 1)};
      cache_key +=
          fmt::format("{}x{}: {} kernel, {} layout, {} rows per tile, variant {}\n", rows, cols,
                      kernels::kernel_info(m.plan.isa).name, kernels::layout_name(m.plan.layout),
                      m.plan.tile_rows, m.plan.variant);
      blob_sizes.push_back(m.code_bytes());
      blob_sizes.push_back(static_cast<std::uint64_t>(rows) * sizeof(float));
      cached.push_back(m);
    };
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
      add(c.dim + 2 * c.kv_dim(), c.dim);
      add(c.dim, c.dim);
      add(2 * c.ffn_dim, c.dim);
      add(c.dim, c.ffn_dim);
    }
    if (kq_head) {
      cache_key +=
          fmt::format("head: {} {}x{} from the file\n", cache_head->type.name, c.vocab_size, c.dim);
    } else if (q8_head) {
      const std::int64_t padded = (c.dim + kernels::kChunk - 1) / kernels::kChunk * kernels::kChunk;
      cache_key += fmt::format("head: Q8_0 {}x{}\n", c.vocab_size, c.dim);
      blob_sizes.push_back(static_cast<std::uint64_t>(c.vocab_size * padded));
      blob_sizes.push_back(static_cast<std::uint64_t>(c.vocab_size * padded / 32) * 2);
    } else {
      add(c.vocab_size, c.dim);
    }
    std::string why;
    w->cache = WeightCache::open(weight_cache, cache_key, blob_sizes, why);
    if (!why.empty()) {
      spdlog::warn("repacked-weights cache {} is {}; repacking the weights and writing it again",
                   weight_cache.string(), why);
    }
  }
  const bool from_cache = w->cache.has_value();
  if (from_cache) {
    spdlog::info("mapped the repacked weights from {}", weight_cache.string());
    // Used now: the cache's pruning removes the least recently used files first.
    std::error_code touch;
    std::filesystem::last_write_time(weight_cache, std::filesystem::file_time_type::clock::now(),
                                     touch);
  }
  std::size_t next_blob = 0;
  const auto cached_matrix = [&]() {
    const CachedMatrix& m = cached[next_blob / 2];
    kernels::PackedMatrix p = m.view(w->cache->blob(next_blob), w->cache->blob(next_blob + 1));
    next_blob += 2;
    return p;
  };

  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const auto blk = [l](const char* part) { return tensors::block(l, part); };
    Weights::Layer layer;
    layer.attn_norm = load_vector(f, blk(tensors::kAttnNorm), c.dim);
    layer.ffn_norm = load_vector(f, blk(tensors::kFfnNorm), c.dim);
    const std::int64_t halves = c.rope_style == RopeStyle::kHalves ? c.head_dim() : 0;
    if (from_cache) {
      layer.wqkv = cached_matrix();
      layer.wo = cached_matrix();
      layer.w_gateup = cached_matrix();
      layer.w_down = cached_matrix();
    } else {
      layer.wqkv = load_ternary(f, ctx,
                                {{blk(tensors::kAttnQ), c.dim, halves},
                                 {blk(tensors::kAttnK), c.kv_dim(), halves},
                                 {blk(tensors::kAttnV), c.kv_dim(), 0}},
                                c.dim);
      layer.wo = load_ternary(f, ctx, blk(tensors::kAttnOutput), c.dim, c.dim);
      layer.w_gateup = load_ternary(
          f, ctx, {{blk(tensors::kFfnGate), c.ffn_dim}, {blk(tensors::kFfnUp), c.ffn_dim}}, c.dim);
      layer.w_down = load_ternary(f, ctx, blk(tensors::kFfnDown), c.ffn_dim, c.dim);
    }
    if (c.sub_norms) {
      layer.attn_sub_norm = load_vector(f, blk(tensors::kAttnSubNorm), c.dim);
      layer.ffn_sub_norm = load_vector(f, blk(tensors::kFfnSubNorm), c.ffn_dim);
    }
    layer.attn_mhc = load_mhc(f, blk(tensors::kAttnMhc), c.mhc_streams);
    layer.ffn_mhc = load_mhc(f, blk(tensors::kFfnMhc), c.mhc_streams);
    layer.attn_h = mhc::residual_matrix(layer.attn_mhc);
    layer.ffn_h = mhc::residual_matrix(layer.ffn_mhc);
    w->layers.push_back(std::move(layer));
    report({blk(tensors::kAttnQ), blk(tensors::kAttnK), blk(tensors::kAttnV),
            blk(tensors::kAttnOutput), blk(tensors::kFfnGate), blk(tensors::kFfnUp),
            blk(tensors::kFfnDown)});
  }
  std::vector<mhc::MhcParams> all;
  for (const auto& layer : w->layers) {
    all.push_back(layer.attn_mhc);
    all.push_back(layer.ffn_mhc);
  }
  try {
    (void)mhc::composite_gain(all);
  } catch (const Error& e) {
    fail<FormatError>("{}: {}", f.name(), e.what());
  }
  w->output_norm = load_vector(f, tensors::kOutputNorm, c.dim);
  const gguf::TensorInfo& head =
      need_tensor(f, c.tied_embeddings ? tensors::kEmbedding : tensors::kOutput);
  check_shape(f, head,
              {static_cast<std::uint64_t>(c.dim), static_cast<std::uint64_t>(c.vocab_size)});
  // The head is read once, in row order, into its runtime copy: its mapped pages are released a
  // slab at a time behind the reader, so the (often largest) tensor is never resident twice.
  const auto head_data = f.tensor_data(head);
  const std::size_t head_row_bytes = head_data.size() / static_cast<std::size_t>(c.vocab_size);
  const auto release_rows = [&](std::int64_t begin, std::int64_t end) {
    f.release(head_data.subspan(static_cast<std::size_t>(begin) * head_row_bytes,
                                static_cast<std::size_t>(end - begin) * head_row_bytes));
  };
  if (from_cache && q8_head) {
    kernels::Q8Matrix q8;
    q8.rows = c.vocab_size;
    q8.cols = c.dim;
    q8.cols_padded = (c.dim + kernels::kChunk - 1) / kernels::kChunk * kernels::kChunk;
    const auto q = w->cache->blob(next_blob), d = w->cache->blob(next_blob + 1);
    q8.q = AlignedBuffer<std::int8_t>::borrowed(reinterpret_cast<const std::int8_t*>(q.data()),
                                                q.size());
    q8.d = AlignedBuffer<std::uint16_t>::borrowed(reinterpret_cast<const std::uint16_t*>(d.data()),
                                                  d.size() / 2);
    w->output_q8 = std::move(q8);
  } else if (kq_head) {
    try {
      // Copied on every thread, each releasing the slabs it has read.
      w->output_kq =
          kernels::pack_kquant(kq_type, head_data, c.vocab_size, c.dim, ctx.pool(), release_rows);
    } catch (const FormatError& e) {
      fail<FormatError>("{}: tensor '{}': {}", f.name(), head.name, e.what());
    }
  } else if (from_cache) {
    w->output = cached_matrix();
  } else if (head.type.is(gguf::TensorType::kQ8_0)) {
    // Copied on every thread, each releasing the slabs it has read.
    w->output_q8 = kernels::pack_q8_0(head_data, c.vocab_size, c.dim, ctx.pool(), release_rows);
    // A block scale of infinity or NaN (fp16 exponent all ones) would make that logit NaN.
    const kernels::Q8Matrix& q8 = *w->output_q8;
    const std::int64_t per_row = q8.cols_padded / 32;
    for (std::int64_t i = 0; i < q8.rows * per_row; ++i) {
      if ((q8.d[static_cast<std::size_t>(i)] & 0x7c00u) == 0x7c00u) {
        fail<FormatError>(
            "{}: tensor '{}' row {} has a block scale that is {}; the tensor data "
            "is corrupt",
            f.name(), head.name, i / per_row, fp16_to_fp32(q8.d[static_cast<std::size_t>(i)]));
      }
    }
  } else if (is_float_type(head.type)) {
    // Dequantized row by row (exactly as ggml does) and held as Q8_0 for the head kernels.
    if (c.dim % 32 != 0 || c.dim % head.type.block != 0) {
      fail<FormatError>(
          "{}: a {} output head needs a width that is a multiple of 32 and of its {}-value "
          "blocks, not {}",
          f.name(), head.type.name, head.type.block, c.dim);
    }
    // On every thread; the lowest row holding a value that is not finite is named after.
    std::atomic<std::int64_t> bad_row{c.vocab_size};
    const auto head_row = [&](std::int64_t row, std::span<float> values) {
      dequantize_rows(head.type.id, head_data, static_cast<std::size_t>(row * c.dim), values);
    };
    w->output_q8 = kernels::quantize_q8_0_matrix(
        c.vocab_size, c.dim,
        [&](std::int64_t row, std::span<float> values) {
          head_row(row, values);
          if (!std::all_of(values.begin(), values.end(),
                           [](float v) { return std::isfinite(v); })) {
            std::int64_t seen = bad_row.load();
            while (row < seen && !bad_row.compare_exchange_weak(seen, row)) {
            }
          }
        },
        ctx.pool(), release_rows);
    if (const std::int64_t row = bad_row.load(); row < c.vocab_size) {
      std::vector<float> values(static_cast<std::size_t>(c.dim));
      head_row(row, values);
      const float v =
          *std::find_if(values.begin(), values.end(), [](float x) { return !std::isfinite(x); });
      fail<FormatError>("{}: tensor '{}' row {} holds {}; the tensor data is corrupt", f.name(),
                        head.name, row, v);
    }
  } else {
    w->output = load_ternary(f, ctx, tensors::kOutput, c.dim, c.vocab_size);
  }
  // Repacked: the mapped copy leaves the resident set. A tied head's rows are still read as
  // embeddings; those few pages fault back in from the page cache.
  f.release(head);
  if (use_cache && !from_cache) {
    // Kept for the next load. A cache that cannot be written (read-only or full disk) costs
    // only that next load's repacking.
    std::vector<std::span<const std::uint8_t>> blobs;
    for (const auto& layer : w->layers) {
      for (const auto* m : {&layer.wqkv, &layer.wo, &layer.w_gateup, &layer.w_down}) {
        blobs.push_back(bytes_of(*m));
        blobs.push_back(bytes_of(m->row_scales));
      }
    }
    if (w->output_q8) {
      blobs.emplace_back(reinterpret_cast<const std::uint8_t*>(w->output_q8->q.data()),
                         w->output_q8->q.bytes());
      blobs.emplace_back(reinterpret_cast<const std::uint8_t*>(w->output_q8->d.data()),
                         w->output_q8->d.bytes());
    } else if (!w->output_kq) {
      blobs.push_back(bytes_of(w->output));
      blobs.push_back(bytes_of(w->output.row_scales));
    }
    bool same = blobs.size() == blob_sizes.size();
    for (std::size_t i = 0; same && i < blobs.size(); ++i) same = blobs[i].size() == blob_sizes[i];
    try {
      if (!same) fail("the repacked matrices do not have the shapes planned for the cache");
      // Room first (a disk full of older cache files would otherwise stay full).
      std::uint64_t incoming = 0;
      for (const auto& blob : blobs) incoming += blob.size() + WeightCache::kAlign;
      WeightCache::prune(weight_cache.parent_path(), weight_cache, WeightCache::budget_from_env(),
                         incoming);
      WeightCache::write(weight_cache, cache_key, blobs);
      spdlog::info("kept the repacked weights in {} for the next load", weight_cache.string());
    } catch (const Error& e) {
      spdlog::warn("could not keep the repacked weights in {} ({}); the next load repacks them",
                   weight_cache.string(), e.what());
    }
  }
  done = total;  // the small tensors (norms, mHC) were read along the way
  report({});
  return std::unique_ptr<Model>(new Model(std::move(w), ctx));
}

void Model::forward(std::span<const TokenId> tokens, KvCache& cache, std::vector<float>& logits,
                    bool all_logits) {
  const Segment segment{tokens, &cache, all_logits};
  forward_batch(std::span<const Segment>(&segment, 1), cache.buffers(), logits);
}

void Model::forward_batch(std::span<const Segment> segments, ForwardBuffers& b,
                          std::vector<float>& logits) {
  const ModelConfig& c = w_->config;
  const std::int64_t dim = c.dim, n = c.mhc_streams, hd = c.head_dim(), kvd = c.kv_dim();
  const std::int64_t group = c.n_heads / c.n_kv_heads;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  // (References, not a structured binding: the lambdas below capture them.)
  auto& x = b.x;
  auto& u = b.u;
  auto& h = b.h;
  auto& q = b.q;
  auto& k = b.k;
  auto& v = b.v;
  auto& att = b.att;
  auto& gate = b.gate;
  auto& up = b.up;
  auto& out = b.out;
  auto& qkv = b.qkv;
  auto& gateup = b.gateup;
  auto& final_h = b.final_h;
  auto& rope_cos = b.rope_cos;
  auto& rope_sin = b.rope_sin;
  auto& segment_cos = b.segment_cos;
  auto& segment_sin = b.segment_sin;
  auto& row_position = b.row_position;
  auto& row_segment = b.row_segment;
  auto& acts = b.acts;

  // Rows: every segment's tokens one after another, each with its segment and position.
  std::int64_t T = 0, out_rows = 0;
  for (std::size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    const auto count = static_cast<std::int64_t>(seg.tokens.size());
    if (count == 0 || seg.cache == nullptr) {
      fail<InternalError>("Model::forward_batch: segment {} has no tokens or no cache", s);
    }
    for (std::size_t r = 0; r < s; ++r) {
      if (segments[r].cache == seg.cache) {
        fail<InternalError>("Model::forward_batch: segments {} and {} share a cache", r, s);
      }
    }
    if (seg.cache->length() + count > seg.cache->capacity()) {
      fail_argument("context", seg.cache->capacity(), "{} tokens are needed; use a larger context",
                    seg.cache->length() + count);
    }
    T += count;
    out_rows += seg.all_logits ? count : 1;
  }
  row_position.resize(sz(T));
  row_segment.resize(sz(T));
  // Runs of rows for attention: each segment's rows in pieces of at most kRun.
  constexpr std::int64_t kRun = 64;
  auto& run_start = b.run_start;
  run_start.clear();
  for (std::int64_t t = 0; const Segment& seg : segments) {
    const auto count = static_cast<std::int64_t>(seg.tokens.size());
    for (std::int64_t i = 0; i < count; i += kRun) run_start.push_back(t + i);
    t += count;
  }
  run_start.push_back(T);
  const auto runs = static_cast<std::int64_t>(run_start.size()) - 1;
  rope_cos.resize(sz(T * (hd / 2)));
  rope_sin.resize(sz(T * (hd / 2)));
  // Residual streams [T][n][dim], all starting as the token embedding.
  x.resize(sz(T * n * dim));
  for (std::int64_t s = 0, t = 0; s < static_cast<std::int64_t>(segments.size()); ++s) {
    const Segment& seg = segments[sz(s)];
    const std::int64_t pos0 = seg.cache->length();
    const auto count = static_cast<std::int64_t>(seg.tokens.size());
    kernels::rope_angles(pos0, count, hd, c.rope_theta, segment_cos, segment_sin);
    std::copy_n(segment_cos.data(), count * (hd / 2), rope_cos.data() + t * (hd / 2));
    std::copy_n(segment_sin.data(), count * (hd / 2), rope_sin.data() + t * (hd / 2));
    for (std::int64_t i = 0; i < count; ++i, ++t) {
      row_position[sz(t)] = pos0 + i;
      row_segment[sz(t)] = s;
      const TokenId tok = seg.tokens[sz(i)];
      if (tok < 0 || tok >= c.vocab_size) fail("token id {} is outside the vocabulary", tok);
      float* x0 = x.data() + t * n * dim;
      dequantize_rows(w_->embedding_type, w_->embedding, static_cast<std::size_t>(tok * dim),
                      std::span<float>(x0, sz(dim)));
      // Rows are read from the file on lookup, so they are checked here (before any cache is
      // touched): a NaN would silently turn every logit into NaN.
      for (std::int64_t j = 0; j < dim; ++j) {
        if (!std::isfinite(x0[j])) {
          fail<FormatError>("{}: tensor '{}' row {} holds {}; the tensor data is corrupt",
                            c.source_file, tensors::kEmbedding, tok, x0[j]);
        }
      }
      for (std::int64_t r = 1; r < n; ++r) std::copy_n(x0, dim, x0 + r * dim);
    }
  }
  // Every element of these is written before it is read.
  u.resize(sz(T * dim));
  h.resize(sz(T * std::max(dim, c.ffn_dim)));
  q.resize(sz(T * dim));
  k.resize(sz(T * kvd));
  v.resize(sz(T * kvd));
  att.resize(sz(T * dim));
  gate.resize(sz(T * c.ffn_dim));
  up.resize(sz(T * c.ffn_dim));
  out.resize(sz(T * dim));
  qkv.resize(sz(T * (dim + 2 * kvd)));
  gateup.resize(sz(T * 2 * c.ffn_dim));
  const float inv_sqrt_hd = 1.0f / std::sqrt(static_cast<float>(hd));

  auto read_streams = [&](const mhc::MhcParams& p) {
    for (std::int64_t t = 0; t < T; ++t) {
      mhc::read(p, std::span<const float>(x.data() + t * n * dim, sz(n * dim)), sz(dim),
                std::span<float>(u.data() + t * dim, sz(dim)));
    }
  };
  auto write_streams = [&](const mhc::MhcParams& p, const std::vector<float>& hm) {
    for (std::int64_t t = 0; t < T; ++t) {
      mhc::write(p, hm, std::span<float>(x.data() + t * n * dim, sz(n * dim)), sz(dim),
                 std::span<const float>(out.data() + t * dim, sz(dim)));
    }
  };
  // Quantizes `in` once; the matrices that read the same input (Q/K/V, gate/up) share it.
  auto quantize = [&](const float* in, std::int64_t in_dim) {
    kernels::pack_activations(in, T, in_dim, acts);
  };
  auto apply = [&](const kernels::PackedMatrix& wm, float* y) {
    kernels_.matmul(wm, acts, y, static_cast<std::size_t>(wm.rows));
  };
  auto linear = [&](const kernels::PackedMatrix& wm, const float* in, std::int64_t in_dim,
                    float* y) {
    quantize(in, in_dim);
    apply(wm, y);
  };

  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const Weights::Layer& L = w_->layers[sz(l)];
    // Attention.
    read_streams(L.attn_mhc);
    for (std::int64_t t = 0; t < T; ++t) {
      rms_norm(u.data() + t * dim, L.attn_norm.data(), h.data() + t * dim, dim, c.norm_eps);
    }
    quantize(h.data(), dim);
    apply(L.wqkv, qkv.data());
    for (std::int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data() + t * (dim + 2 * kvd);
      std::copy_n(row, dim, q.data() + t * dim);
      std::copy_n(row + dim, kvd, k.data() + t * kvd);
      std::copy_n(row + dim + kvd, kvd, v.data() + t * kvd);
    }
    for (std::int64_t t = 0; t < T; ++t) {
      const float* cos_t = rope_cos.data() + t * (hd / 2);
      const float* sin_t = rope_sin.data() + t * (hd / 2);
      // Adjacent pairs for every architecture: Q and K of NeoX-style files were loaded in that
      // order (TernaryPart::halves_head_dim).
      kernels::rope_rotate(q.data() + t * dim, c.n_heads, hd, cos_t, sin_t, 1.0f, true);
      kernels::rope_rotate(k.data() + t * kvd, c.n_kv_heads, hd, cos_t, sin_t, 1.0f, true);
      KvCache& cache = *segments[sz(row_segment[sz(t)])].cache;
      const std::int64_t pos = row_position[sz(t)];
      std::copy_n(k.data() + t * kvd, kvd, cache.keys(l) + pos * kvd);
      std::copy_n(v.data() + t * kvd, kvd, cache.values(l) + pos * kvd);
    }
    // Causal attention, (run, head) jobs split over the pool. A run is up to kRun consecutive rows
    // of one sequence (positions pos0, pos0 + 1, ...): attention_rows gives each row exactly what
    // attention_row would, with each key block and value row read once for the whole run.
    kernels_.pool().parallel_for(runs * c.n_heads, [&](std::int64_t begin, std::int64_t end) {
      thread_local std::vector<float> scores;  // kRun rows of probabilities, kept between calls
      for (std::int64_t job = begin; job < end; ++job) {
        // Heads outer: later runs see more keys, so threads split by heads stay balanced.
        const std::int64_t head = job / runs, run = job % runs;
        const std::int64_t t0 = run_start[sz(run)], count = run_start[sz(run) + 1] - t0;
        KvCache& cache = *segments[sz(row_segment[sz(t0)])].cache;
        const std::int64_t pos0 = row_position[sz(t0)], width = pos0 + count;
        if (scores.size() < sz(count * width)) scores.resize(sz(count * width));
        kernels::attention_rows(q.data() + t0 * dim + head * hd, dim, count, pos0,
                                cache.keys(l) + (head / group) * hd,
                                cache.values(l) + (head / group) * hd, kvd, hd, inv_sqrt_hd,
                                scores.data(), width, att.data() + t0 * dim + head * hd, dim);
      }
    });
    if (c.sub_norms) {
      for (std::int64_t t = 0; t < T; ++t) {
        rms_norm(att.data() + t * dim, L.attn_sub_norm.data(), att.data() + t * dim, dim,
                 c.norm_eps);
      }
    }
    linear(L.wo, att.data(), dim, out.data());
    write_streams(L.attn_mhc, L.attn_h);

    // Feed-forward.
    read_streams(L.ffn_mhc);
    for (std::int64_t t = 0; t < T; ++t) {
      rms_norm(u.data() + t * dim, L.ffn_norm.data(), h.data() + t * dim, dim, c.norm_eps);
    }
    quantize(h.data(), dim);
    apply(L.w_gateup, gateup.data());
    for (std::int64_t t = 0; t < T; ++t) {
      const float* row = gateup.data() + t * 2 * c.ffn_dim;
      std::copy_n(row, c.ffn_dim, gate.data() + t * c.ffn_dim);
      std::copy_n(row + c.ffn_dim, c.ffn_dim, up.data() + t * c.ffn_dim);
    }
    kernels::gated_activation(gate.data(), up.data(), gate.data(), T * c.ffn_dim,
                              c.ffn_activation == FfnActivation::kReluSquared);
    if (c.sub_norms) {
      for (std::int64_t t = 0; t < T; ++t) {
        rms_norm(gate.data() + t * c.ffn_dim, L.ffn_sub_norm.data(), gate.data() + t * c.ffn_dim,
                 c.ffn_dim, c.norm_eps);
      }
    }
    linear(L.w_down, gate.data(), c.ffn_dim, out.data());
    write_streams(L.ffn_mhc, L.ffn_h);
  }
  for (const Segment& seg : segments) {
    seg.cache->set_length(seg.cache->length() + static_cast<std::int64_t>(seg.tokens.size()));
  }

  // Output: mean of the streams, final norm, head — for each segment's last row (or all).
  final_h.resize(sz(out_rows * dim));
  std::int64_t row = 0;
  for (std::int64_t s = 0, t0 = 0; s < static_cast<std::int64_t>(segments.size()); ++s) {
    const auto count = static_cast<std::int64_t>(segments[sz(s)].tokens.size());
    for (std::int64_t t = segments[sz(s)].all_logits ? t0 : t0 + count - 1; t < t0 + count; ++t) {
      std::fill_n(u.data(), dim, 0.0f);
      for (std::int64_t r = 0; r < n; ++r) {
        const float* xs = x.data() + (t * n + r) * dim;
        for (std::int64_t i = 0; i < dim; ++i) u[sz(i)] += xs[i] / static_cast<float>(n);
      }
      rms_norm(u.data(), w_->output_norm.data(), final_h.data() + row * dim, dim, c.norm_eps);
      ++row;
    }
    t0 += count;
  }
  const std::int64_t rows = out_rows;
  logits.assign(sz(rows * c.vocab_size), 0.0f);
  if (w_->output_q8) {
    kernels::pack_activations(final_h.data(), rows, dim, acts);
    kernels::q8_matmul(*w_->output_q8, acts, kernels_.isa(), kernels_.pool(), logits.data(),
                       static_cast<std::size_t>(c.vocab_size));
  } else if (w_->output_kq) {
    kernels::pack_activations(final_h.data(), rows, dim, acts);
    kernels::kquant_matmul(*w_->output_kq, acts, kernels_.isa(), kernels_.pool(), logits.data(),
                           static_cast<std::size_t>(c.vocab_size));
  } else {
    kernels::pack_activations(final_h.data(), rows, dim, acts);
    kernels_.matmul(w_->output, acts, logits.data(), static_cast<std::size_t>(c.vocab_size));
  }
}

}  // namespace nanochat::model
