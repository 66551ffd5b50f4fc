#include "nanochat/model/model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/kernels/q8.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::model {
namespace {

float bf16_to_fp32(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Ternary tensor rows for packing: decodes one row (TQ2_0, TQ1_0 or I2_S) into trits and
// returns its scale; a row whose blocks disagree on the scale is an error for now.
struct TernarySource {
  const gguf::GgufFile& file;
  const gguf::TensorInfo& info;
  std::span<const std::uint8_t> data;
  std::int64_t cols;
  float i2s_scale = 0;

  float decode_row(std::int64_t row, std::span<std::int8_t> trits) const {
    const auto id = info.type.id;
    if (id == 35 || id == 34) {
      const std::size_t row_bytes =
          id == 35 ? ternary::tq2_0_bytes(cols) : ternary::tq1_0_bytes(cols);
      const auto bytes = data.subspan(static_cast<std::size_t>(row) * row_bytes, row_bytes);
      std::vector<float> scales(static_cast<std::size_t>(cols / ternary::kQkK));
      if (id == 35) {
        ternary::decode_tq2_0(bytes, trits, scales);
      } else {
        ternary::decode_tq1_0(bytes, trits, scales);
      }
      for (float s : scales) {
        if (s != scales[0]) {
          fail<FormatError>(
              "{}: tensor '{}' row {} has different scales in its blocks; nanochat "
              "needs one scale per row",
              file.name(), info.name, row);
        }
      }
      return scales[0];
    }
    // I2_S: 128-weight groups of 32 bytes along the flattened tensor.
    const std::size_t base = static_cast<std::size_t>(row * cols / 4);
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::int64_t group = j / 128, k = j % 128;
      const unsigned code =
          (data[base + static_cast<std::size_t>(group * 32 + k % 32)] >> (6 - 2 * (k / 32))) & 3u;
      if (code == 3) {
        fail<FormatError>("{}: tensor '{}' holds an I2_S code 3; the data is corrupt", file.name(),
                          info.name);
      }
      trits[static_cast<std::size_t>(j)] = static_cast<std::int8_t>(static_cast<int>(code) - 1);
    }
    return i2s_scale;
  }
};

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

kernels::PackedMatrix load_ternary(const gguf::GgufFile& f, kernels::KernelContext& ctx,
                                   const std::string& name, std::int64_t in, std::int64_t out) {
  const gguf::TensorInfo& t = need_tensor(f, name);
  check_shape(f, t, {static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(out)});
  const auto id = t.type.id;
  if (id != 34 && id != 35 && id != 36) {
    fail<FormatError>(
        "{}: tensor '{}' has type {}; nanochat's linear layers are ternary (TQ2_0, "
        "TQ1_0 or I2_S)",
        f.name(), name, t.type.name);
  }
  TernarySource src{f, t, f.tensor_data(t), in};
  if (id == 36) {
    std::memcpy(&src.i2s_scale, src.data.data() + in * out / 4, sizeof(float));
  }
  std::vector<float> scales(static_cast<std::size_t>(out));
  kernels::PackedMatrix m = ctx.pack(out, in, [&](std::int64_t row, std::span<std::int8_t> trits) {
    scales[static_cast<std::size_t>(row)] = src.decode_row(row, trits);
  });
  m.row_scales = std::move(scales);
  return m;
}

std::vector<float> load_vector(const gguf::GgufFile& f, const std::string& name, std::int64_t n) {
  const gguf::TensorInfo& t = need_tensor(f, name);
  check_shape(f, t, {static_cast<std::uint64_t>(n)});
  return dequantize_tensor(f, name);
}

mhc::MhcParams load_mhc(const gguf::GgufFile& f, const std::string& name, int n) {
  mhc::MhcParams p = mhc::MhcParams::identity(n);
  if (n == 1) return p;
  const std::size_t logits = n == 2 ? 1 : 24;
  const std::vector<float> v =
      load_vector(f, name, static_cast<std::int64_t>(2 * static_cast<std::size_t>(n) + logits));
  p.h_pre.assign(v.begin(), v.begin() + n);
  p.h_post.assign(v.begin() + n, v.begin() + 2 * n);
  p.res_logits.assign(v.begin() + 2 * n, v.end());
  try {
    p.validate();
  } catch (const Error& e) {
    fail<FormatError>("{}: tensor '{}': {}", f.name(), name, e.what());
  }
  return p;
}

void rms_norm(const float* x, const float* w, float* out, std::int64_t n, float eps) {
  double ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

// Rotates adjacent pairs (2i, 2i+1) of each head by pos * theta^(-2i / head_dim).
void rope(float* v, std::int64_t heads, std::int64_t head_dim, std::int64_t pos, float theta) {
  for (std::int64_t i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta),
                                 -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    const double angle = static_cast<double>(pos) * freq;
    const auto c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    for (std::int64_t h = 0; h < heads; ++h) {
      float* p = v + h * head_dim + 2 * i;
      const float a = p[0], b = p[1];
      p[0] = a * c - b * s;
      p[1] = a * s + b * c;
    }
  }
}

}  // namespace

std::vector<float> dequantize_tensor(const gguf::GgufFile& f, const std::string& name) {
  const gguf::TensorInfo& t = need_tensor(f, name);
  const auto data = f.tensor_data(t);
  const auto n = static_cast<std::size_t>(t.elements());
  std::vector<float> out(n);
  switch (t.type.id) {
    case 0:
      std::memcpy(out.data(), data.data(), n * 4);
      break;
    case 1:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, data.data() + 2 * i, 2);
        out[i] = fp16_to_fp32(h);
      }
      break;
    case 30:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, data.data() + 2 * i, 2);
        out[i] = bf16_to_fp32(h);
      }
      break;
    case 8:
      for (std::size_t b = 0; b < n / 32; ++b) {
        std::uint16_t d;
        std::memcpy(&d, data.data() + b * 34, 2);
        const float scale = fp16_to_fp32(d);
        for (std::size_t i = 0; i < 32; ++i) {
          out[b * 32 + i] =
              scale * static_cast<float>(static_cast<std::int8_t>(data[b * 34 + 2 + i]));
        }
      }
      break;
    default:
      fail<FormatError>("{}: tensor '{}' has type {}; expected F32, F16, BF16 or Q8_0", f.name(),
                        name, t.type.name);
  }
  return out;
}

KvCache::KvCache(const ModelConfig& c, std::int64_t capacity)
    : capacity_(capacity), kv_dim_(c.kv_dim()) {
  if (capacity <= 0) fail<UsageError>("-c {}: the context must hold at least one token", capacity);
  const auto size = static_cast<std::size_t>(c.n_layers * capacity * kv_dim_);
  k_.assign(size, 0.0f);
  v_.assign(size, 0.0f);
}

struct Model::Weights {
  ModelConfig config;
  std::vector<float> embedding;  // [vocab][dim]
  struct Layer {
    std::vector<float> attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm;
    kernels::PackedMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
    mhc::MhcParams attn_mhc, ffn_mhc;
    std::vector<float> attn_h, ffn_h;  // their residual matrices
  };
  std::vector<Layer> layers;
  std::vector<float> output_norm;
  kernels::PackedMatrix output;                // ternary head
  std::optional<kernels::Q8Matrix> output_q8;  // Q8_0 head (as BitNet files carry it)
};

Model::Model(std::unique_ptr<Weights> w, kernels::KernelContext& kernels)
    : w_(std::move(w)), kernels_(kernels) {}
Model::~Model() = default;
const ModelConfig& Model::config() const { return w_->config; }

std::size_t Model::bytes_per_token() const {
  std::size_t bytes = 0;
  for (const auto& l : w_->layers) {
    for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      bytes += m->weight_bytes();
    }
  }
  bytes +=
      w_->config.tied_embeddings ? w_->embedding.size() * sizeof(float) : w_->output.weight_bytes();
  return bytes;
}

std::unique_ptr<Model> Model::load(const gguf::GgufFile& f, kernels::KernelContext& ctx) {
  if (f.architecture() != "nanochat") {
    fail<FormatError>("{}: architecture '{}' is not one nanochat runs yet (nanochat)", f.name(),
                      f.architecture().empty() ? "(none)" : f.architecture());
  }
  auto w = std::make_unique<Weights>();
  ModelConfig& c = w->config;
  c = ModelConfig::from_gguf(f);
  const gguf::TensorInfo& emb = need_tensor(f, "token_embd.weight");
  check_shape(f, emb,
              {static_cast<std::uint64_t>(c.dim), static_cast<std::uint64_t>(c.vocab_size)});
  w->embedding = dequantize_tensor(f, "token_embd.weight");
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    Weights::Layer layer;
    layer.attn_norm = load_vector(f, p + "attn_norm.weight", c.dim);
    layer.ffn_norm = load_vector(f, p + "ffn_norm.weight", c.dim);
    layer.wq = load_ternary(f, ctx, p + "attn_q.weight", c.dim, c.dim);
    layer.wk = load_ternary(f, ctx, p + "attn_k.weight", c.dim, c.kv_dim());
    layer.wv = load_ternary(f, ctx, p + "attn_v.weight", c.dim, c.kv_dim());
    layer.wo = load_ternary(f, ctx, p + "attn_output.weight", c.dim, c.dim);
    layer.w_gate = load_ternary(f, ctx, p + "ffn_gate.weight", c.dim, c.ffn_dim);
    layer.w_up = load_ternary(f, ctx, p + "ffn_up.weight", c.dim, c.ffn_dim);
    layer.w_down = load_ternary(f, ctx, p + "ffn_down.weight", c.ffn_dim, c.dim);
    if (c.sub_norms) {
      layer.attn_sub_norm = load_vector(f, p + "attn_sub_norm.weight", c.dim);
      layer.ffn_sub_norm = load_vector(f, p + "ffn_sub_norm.weight", c.ffn_dim);
    }
    layer.attn_mhc = load_mhc(f, p + "attn_mhc.weight", c.mhc_streams);
    layer.ffn_mhc = load_mhc(f, p + "ffn_mhc.weight", c.mhc_streams);
    layer.attn_h = mhc::residual_matrix(layer.attn_mhc);
    layer.ffn_h = mhc::residual_matrix(layer.ffn_mhc);
    w->layers.push_back(std::move(layer));
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
  w->output_norm = load_vector(f, "output_norm.weight", c.dim);
  if (!c.tied_embeddings) {
    const gguf::TensorInfo& out = need_tensor(f, "output.weight");
    if (out.type.id == 8) {
      check_shape(f, out,
                  {static_cast<std::uint64_t>(c.dim), static_cast<std::uint64_t>(c.vocab_size)});
      w->output_q8 = kernels::pack_q8_0(f.tensor_data(out), c.vocab_size, c.dim);
    } else {
      w->output = load_ternary(f, ctx, "output.weight", c.dim, c.vocab_size);
    }
  }
  return std::unique_ptr<Model>(new Model(std::move(w), ctx));
}

void Model::forward(std::span<const TokenId> tokens, KvCache& cache, std::vector<float>& logits,
                    bool all_logits) {
  const ModelConfig& c = w_->config;
  const auto T = static_cast<std::int64_t>(tokens.size());
  if (T == 0) fail("forward needs at least one token");
  const std::int64_t pos0 = cache.length();
  if (pos0 + T > cache.capacity()) {
    fail<UsageError>("the context holds {} tokens but {} are needed; raise -c", cache.capacity(),
                     pos0 + T);
  }
  const std::int64_t dim = c.dim, n = c.mhc_streams, hd = c.head_dim(), kvd = c.kv_dim();
  const std::int64_t group = c.n_heads / c.n_kv_heads;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };

  // Residual streams [T][n][dim], all starting as the token embedding.
  std::vector<float> x(sz(T * n * dim));
  for (std::int64_t t = 0; t < T; ++t) {
    const TokenId tok = tokens[sz(t)];
    if (tok < 0 || tok >= c.vocab_size) fail("token id {} is outside the vocabulary", tok);
    for (std::int64_t s = 0; s < n; ++s) {
      std::copy_n(w_->embedding.data() + tok * dim, dim, x.data() + (t * n + s) * dim);
    }
  }
  std::vector<float> u(sz(T * dim)), h(sz(T * std::max(dim, c.ffn_dim)));
  std::vector<float> q(sz(T * dim)), k(sz(T * kvd)), v(sz(T * kvd)), att(sz(T * dim));
  std::vector<float> gate(sz(T * c.ffn_dim)), up(sz(T * c.ffn_dim)), out(sz(T * dim));
  std::vector<float> scores(sz(pos0 + T));
  kernels::PackedActivations acts;
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
    apply(L.wq, q.data());
    apply(L.wk, k.data());
    apply(L.wv, v.data());
    float* kc = cache.keys(l);
    float* vc = cache.values(l);
    for (std::int64_t t = 0; t < T; ++t) {
      rope(q.data() + t * dim, c.n_heads, hd, pos0 + t, c.rope_theta);
      rope(k.data() + t * kvd, c.n_kv_heads, hd, pos0 + t, c.rope_theta);
      std::copy_n(k.data() + t * kvd, kvd, kc + (pos0 + t) * kvd);
      std::copy_n(v.data() + t * kvd, kvd, vc + (pos0 + t) * kvd);
    }
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t len = pos0 + t + 1;  // causal
      for (std::int64_t head = 0; head < c.n_heads; ++head) {
        const float* qh = q.data() + t * dim + head * hd;
        const std::int64_t kvh = head / group;
        float top = -INFINITY;
        for (std::int64_t p = 0; p < len; ++p) {
          const float* kp = kc + p * kvd + kvh * hd;
          float dot = 0;
          for (std::int64_t i = 0; i < hd; ++i) dot += qh[i] * kp[i];
          scores[sz(p)] = dot * inv_sqrt_hd;
          top = std::max(top, scores[sz(p)]);
        }
        float sum = 0;
        for (std::int64_t p = 0; p < len; ++p) {
          scores[sz(p)] = std::exp(scores[sz(p)] - top);
          sum += scores[sz(p)];
        }
        float* o = att.data() + t * dim + head * hd;
        std::fill_n(o, hd, 0.0f);
        for (std::int64_t p = 0; p < len; ++p) {
          const float wgt = scores[sz(p)] / sum;
          const float* vp = vc + p * kvd + kvh * hd;
          for (std::int64_t i = 0; i < hd; ++i) o[i] += wgt * vp[i];
        }
      }
      if (c.sub_norms) {
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
    apply(L.w_gate, gate.data());
    apply(L.w_up, up.data());
    for (std::size_t i = 0; i < gate.size(); ++i) {
      const float g = gate[i];
      const float a = c.ffn_activation == FfnActivation::kSwiGlu ? g / (1.0f + std::exp(-g))
                                                                 : (g > 0 ? g * g : 0.0f);
      gate[i] = a * up[i];
    }
    if (c.sub_norms) {
      for (std::int64_t t = 0; t < T; ++t) {
        rms_norm(gate.data() + t * c.ffn_dim, L.ffn_sub_norm.data(), gate.data() + t * c.ffn_dim,
                 c.ffn_dim, c.norm_eps);
      }
    }
    linear(L.w_down, gate.data(), c.ffn_dim, out.data());
    write_streams(L.ffn_mhc, L.ffn_h);
  }
  cache.set_length(pos0 + T);

  // Output: mean of the streams, final norm, head.
  const std::int64_t first = all_logits ? 0 : T - 1;
  const std::int64_t rows = T - first;
  std::vector<float> final_h(sz(rows * dim));
  for (std::int64_t t = first; t < T; ++t) {
    std::fill_n(u.data(), dim, 0.0f);
    for (std::int64_t s = 0; s < n; ++s) {
      const float* xs = x.data() + (t * n + s) * dim;
      for (std::int64_t i = 0; i < dim; ++i) u[sz(i)] += xs[i] / static_cast<float>(n);
    }
    rms_norm(u.data(), w_->output_norm.data(), final_h.data() + (t - first) * dim, dim, c.norm_eps);
  }
  logits.assign(sz(rows * c.vocab_size), 0.0f);
  if (c.tied_embeddings) {
    // Float head over the embedding rows, split over the pool (each logit by one thread, so
    // results do not depend on the thread count).
    kernels_.pool().parallel_for(c.vocab_size, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* hr = final_h.data() + r * dim;
        for (std::int64_t tok = begin; tok < end; ++tok) {
          const float* e = w_->embedding.data() + tok * dim;
          float dot = 0;
          for (std::int64_t i = 0; i < dim; ++i) dot += e[i] * hr[i];
          logits[sz(r * c.vocab_size + tok)] = dot;
        }
      }
    });
  } else if (w_->output_q8) {
    kernels::pack_activations(final_h.data(), rows, dim, acts);
    kernels::q8_matmul(*w_->output_q8, acts, kernels_.isa(), kernels_.pool(), logits.data(),
                       static_cast<std::size_t>(c.vocab_size));
  } else {
    kernels::pack_activations(final_h.data(), rows, dim, acts);
    kernels_.matmul(w_->output, acts, logits.data(), static_cast<std::size_t>(c.vocab_size));
  }
}

}  // namespace nanochat::model
