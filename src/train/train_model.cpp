#include "nanochat/train/train_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>

#include "nanochat/kernels/q8.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::train {
namespace tensors = model::tensors;
namespace {

std::size_t sz(std::int64_t v) { return static_cast<std::size_t>(v); }

mhc::MhcParams mhc_from(const Param* p, int n) {
  return p == nullptr ? mhc::MhcParams::identity(n) : mhc::unpack(p->value, n);
}

}  // namespace

// Indices of one block's parameters in params_ (-1 when the block has none).
struct LayerParams {
  int attn_norm = -1, attn_mhc = -1, wq = -1, wk = -1, wv = -1, attn_sub_norm = -1, wo = -1;
  int ffn_norm = -1, ffn_mhc = -1, w_gate = -1, w_up = -1, ffn_sub_norm = -1, w_down = -1;
};

// What the forward keeps for the backward, per block; (N, ...) with N = B*T rows.
struct LayerActs {
  std::vector<float> x_in;  // (N, n, C) streams entering the block
  std::vector<float> u_attn, rstd_attn, h_attn;
  std::vector<float> q, k, v, probs;
  std::vector<float> att, rstd_att_sub, att_n, y_attn;
  std::vector<float> x_mid;  // (N, n, C) streams after attention
  std::vector<float> u_ffn, rstd_ffn, h_ffn;
  std::vector<float> gate, up, act, rstd_act_sub, act_n, y_ffn;
  GemmInput xhat_qkv, xhat_o, xhat_ffn, xhat_down;  // the ternary layers' quantized inputs
};

struct TrainModel::Impl {
  std::vector<LayerParams> layers;
  int embedding = -1, output_norm = -1, output = -1;
  // Quantized weights of the current forward, by parameter index.
  std::vector<TernaryLinear> ternary;
  GemmPrecision precision = GemmPrecision::kF32;
  bool quantize = true;  // false: float linear layers and head (model.quantization = "none")
  std::optional<kernels::Q8Matrix> tied_q8;
  std::vector<float> tied_dequant;            // (V, C)
  std::vector<std::uint16_t> tied_dequant16;  // the same in bf16, for bf16 GEMMs
  // Activations.
  std::int64_t rows = 0, seq = 0;
  std::vector<LayerActs> acts;
  std::vector<float> x, x_final, mean, rstd_out, h_out, logits, d_logits;
  GemmInput xhat_head;
  std::optional<RopeTable> rope;
  kernels::PackedActivations packed;
  // Backward scratch, kept between steps (fresh large vectors cost page faults every step).
  std::vector<float> emb, d_h, d_mean, d_x, d_x_mid, d_y, d_u, d_att, d_att_n, d_act, d_act_n,
      d_gate, d_up, d_q, d_k, d_v, d_emb;
};

TrainModel::TrainModel(const model::ModelConfig& c, kernels::KernelContext& kernels)
    : config_(c), kernels_(kernels), impl_(std::make_unique<Impl>()) {
  config_.validate("the training model");
  if (config_.architecture != "nanochat") fail("the trainer builds the nanochat architecture");
  const std::int64_t C = c.dim, F = c.ffn_dim, V = c.vocab_size, KVD = c.kv_dim();
  auto add = [&](std::string name, std::vector<std::int64_t> shape, bool matrix, bool ternary,
                 bool decay) {
    Param p;
    p.name = std::move(name);
    std::int64_t count = 1;
    for (auto d : shape) count *= d;
    p.shape = std::move(shape);
    p.value.assign(sz(count), 0.0f);
    p.grad.assign(sz(count), 0.0f);
    p.matrix = matrix;
    p.ternary = ternary;
    p.decay = decay;
    params_.push_back(std::move(p));
    return static_cast<int>(params_.size() - 1);
  };
  Impl& m = *impl_;
  m.embedding = add(tensors::kEmbedding, {V, C}, false, false, true);
  const auto mhc_size = static_cast<std::int64_t>(mhc::packed_layout(c.mhc_streams).size);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const auto blk = [l](const char* part) { return tensors::block(l, part); };
    LayerParams L;
    L.attn_norm = add(blk(tensors::kAttnNorm), {C}, false, false, false);
    if (mhc_size > 0) L.attn_mhc = add(blk(tensors::kAttnMhc), {mhc_size}, false, false, false);
    L.wq = add(blk(tensors::kAttnQ), {C, C}, true, true, true);
    L.wk = add(blk(tensors::kAttnK), {KVD, C}, true, true, true);
    L.wv = add(blk(tensors::kAttnV), {KVD, C}, true, true, true);
    if (c.sub_norms) L.attn_sub_norm = add(blk(tensors::kAttnSubNorm), {C}, false, false, false);
    L.wo = add(blk(tensors::kAttnOutput), {C, C}, true, true, true);
    L.ffn_norm = add(blk(tensors::kFfnNorm), {C}, false, false, false);
    if (mhc_size > 0) L.ffn_mhc = add(blk(tensors::kFfnMhc), {mhc_size}, false, false, false);
    L.w_gate = add(blk(tensors::kFfnGate), {F, C}, true, true, true);
    L.w_up = add(blk(tensors::kFfnUp), {F, C}, true, true, true);
    if (c.sub_norms) L.ffn_sub_norm = add(blk(tensors::kFfnSubNorm), {F}, false, false, false);
    L.w_down = add(blk(tensors::kFfnDown), {C, F}, true, true, true);
    m.layers.push_back(L);
  }
  m.output_norm = add(tensors::kOutputNorm, {C}, false, false, false);
  if (!c.tied_embeddings) m.output = add(tensors::kOutput, {V, C}, false, true, true);
  m.ternary.resize(params_.size());
}

TrainModel::~TrainModel() = default;

void TrainModel::set_gemm_precision(GemmPrecision p) { impl_->precision = p; }
void TrainModel::set_quantization(bool ternary) { impl_->quantize = ternary; }

std::size_t TrainModel::parameter_count() const {
  std::size_t n = 0;
  for (const auto& p : params_) n += p.size();
  return n;
}

void TrainModel::init(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = config_.mhc_streams;
  for (auto& p : params_) {
    const std::string_view part = tensors::part_of(p.name);
    const bool gain = part.ends_with("norm") || p.name == tensors::kOutputNorm;
    const bool mhc_param = part == tensors::kAttnMhc || part == tensors::kFfnMhc;
    if (gain) {
      std::fill(p.value.begin(), p.value.end(), 1.0f);
    } else if (mhc_param) {
      p.value = mhc::pack(mhc::MhcParams::identity(n));
    } else {
      // GPT-2's 0.02, with output projections scaled down by depth.
      float std = 0.02f;
      if (part == tensors::kAttnOutput || part == tensors::kFfnDown) {
        std /= std::sqrt(2.0f * static_cast<float>(config_.n_layers));
      }
      for (auto& v : p.value) v = std * normal(rng);
    }
  }
}

void TrainModel::zero_grad() {
  for (auto& p : params_) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
}

namespace {

// The forward pass shared by training, evaluation and logits(): fills impl.logits (N, V).
struct Forward {
  const model::ModelConfig& c;
  kernels::KernelContext& ctx;
  std::vector<Param>& params;
  TrainModel::Impl& m;

  float* val(int i) { return params[sz(i)].value.data(); }

  void quantize_weights() {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      if (p.ternary) {
        m.ternary[i].quantize = m.quantize;
        ternary_prepare(ctx, p.value.data(), p.shape[0], p.shape[1], m.ternary[i], m.precision,
                        m.rows);
      }
    }
    if (c.tied_embeddings && !m.quantize) {
      const Param& e = params[sz(m.embedding)];
      m.tied_dequant = e.value;
      if (m.precision == GemmPrecision::kBf16) {
        round_to_bf16(ctx.pool(), m.tied_dequant.data(), c.vocab_size, c.dim, m.tied_dequant16);
      }
    } else if (c.tied_embeddings) {
      const Param& e = params[sz(m.embedding)];
      m.tied_q8 = kernels::quantize_q8_0_matrix(
          c.vocab_size, c.dim, [&](std::int64_t row, std::span<float> values) {
            std::copy_n(e.value.data() + row * c.dim, c.dim, values.data());
          });
      m.tied_dequant.resize(e.value.size());
      q8_dequantize(*m.tied_q8, m.tied_dequant.data());
      if (m.precision == GemmPrecision::kBf16) {
        round_to_bf16(ctx.pool(), m.tied_dequant.data(), c.vocab_size, c.dim, m.tied_dequant16);
      }
    }
  }

  void resize(std::int64_t batch, std::int64_t seq) {
    const std::int64_t N = batch * seq, C = c.dim, F = c.ffn_dim, n = c.mhc_streams;
    const std::int64_t KVD = c.kv_dim(), V = c.vocab_size;
    if (!m.rope || m.seq != seq) m.rope.emplace(seq, c.head_dim(), c.rope_theta);
    if (m.rows == N && m.seq == seq) return;
    m.rows = N;
    m.seq = seq;
    m.acts.assign(sz(c.n_layers), LayerActs{});
    for (auto& a : m.acts) {
      for (auto* v : {&a.x_in, &a.x_mid}) v->resize(sz(N * n * C));
      for (auto* v :
           {&a.u_attn, &a.h_attn, &a.q, &a.att, &a.y_attn, &a.u_ffn, &a.h_ffn, &a.y_ffn}) {
        v->resize(sz(N * C));
      }
      if (c.sub_norms) a.att_n.resize(sz(N * C));
      for (auto* v : {&a.rstd_attn, &a.rstd_att_sub, &a.rstd_ffn, &a.rstd_act_sub}) {
        v->resize(sz(N));
      }
      a.k.resize(sz(N * KVD));
      a.v.resize(sz(N * KVD));
      a.probs.resize(sz(batch * c.n_heads * seq * seq));
      for (auto* v : {&a.gate, &a.up, &a.act}) v->resize(sz(N * F));
      if (c.sub_norms) a.act_n.resize(sz(N * F));
    }
    m.x.resize(sz(N * n * C));
    m.x_final.resize(sz(N * n * C));
    for (auto* v : {&m.mean, &m.h_out}) v->resize(sz(N * C));
    m.rstd_out.resize(sz(N));
    m.logits.resize(sz(N * V));
    m.d_logits.resize(sz(N * V));
  }

  void run(std::span<const std::int32_t> tokens, std::int64_t batch, std::int64_t seq) {
    resize(batch, seq);
    quantize_weights();
    const std::int64_t N = batch * seq, C = c.dim, n = c.mhc_streams, F = c.ffn_dim;
    auto& pool = ctx.pool();
    const AttentionShape shape{batch, seq, c.n_heads, c.n_kv_heads, c.head_dim()};
    for (const std::int32_t t : tokens) {
      if (t < 0 || t >= c.vocab_size) fail("token id {} is outside the vocabulary", t);
    }
    // Embedding into every stream.
    std::vector<float>& emb = m.emb;
    emb.resize(sz(N * C));
    embedding_forward(tokens, val(m.embedding), C, emb.data());
    for (std::int64_t r = 0; r < N; ++r) {
      for (std::int64_t s = 0; s < n; ++s) {
        std::copy_n(emb.data() + r * C, C, m.x.data() + (r * n + s) * C);
      }
    }
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
      const LayerParams& L = m.layers[sz(l)];
      LayerActs& a = m.acts[sz(l)];
      const mhc::MhcParams attn_mhc =
          mhc_from(L.attn_mhc >= 0 ? &params[sz(L.attn_mhc)] : nullptr, c.mhc_streams);
      const mhc::MhcParams ffn_mhc =
          mhc_from(L.ffn_mhc >= 0 ? &params[sz(L.ffn_mhc)] : nullptr, c.mhc_streams);
      // Attention.
      a.x_in = m.x;
      mhc_read_forward(pool, attn_mhc, a.x_in.data(), N, C, a.u_attn.data());
      rmsnorm_forward(pool, a.u_attn.data(), val(L.attn_norm), N, C, c.norm_eps, a.h_attn.data(),
                      a.rstd_attn.data());
      quantize_input(pool, a.h_attn.data(), N, C, m.packed, a.xhat_qkv, m.precision, m.quantize);
      linear_forward(ctx, m.ternary[sz(L.wq)], m.packed, a.xhat_qkv, N, a.q.data(), m.precision);
      linear_forward(ctx, m.ternary[sz(L.wk)], m.packed, a.xhat_qkv, N, a.k.data(), m.precision);
      linear_forward(ctx, m.ternary[sz(L.wv)], m.packed, a.xhat_qkv, N, a.v.data(), m.precision);
      rope_forward(pool, *m.rope, a.q.data(), N, seq, c.n_heads, c.rope_style);
      rope_forward(pool, *m.rope, a.k.data(), N, seq, c.n_kv_heads, c.rope_style);
      attention_forward(pool, shape, a.q.data(), a.k.data(), a.v.data(), a.att.data(),
                        a.probs.data());
      float* att_n = a.att.data();
      if (c.sub_norms) {
        rmsnorm_forward(pool, a.att.data(), val(L.attn_sub_norm), N, C, c.norm_eps, a.att_n.data(),
                        a.rstd_att_sub.data());
        att_n = a.att_n.data();
      }
      quantize_input(pool, att_n, N, C, m.packed, a.xhat_o, m.precision, m.quantize);
      linear_forward(ctx, m.ternary[sz(L.wo)], m.packed, a.xhat_o, N, a.y_attn.data(), m.precision);
      const auto h_attn = mhc::residual_matrix(attn_mhc);
      mhc_write_forward(pool, attn_mhc, h_attn, a.x_in.data(), a.y_attn.data(), N, C,
                        a.x_mid.data());
      // Feed-forward.
      mhc_read_forward(pool, ffn_mhc, a.x_mid.data(), N, C, a.u_ffn.data());
      rmsnorm_forward(pool, a.u_ffn.data(), val(L.ffn_norm), N, C, c.norm_eps, a.h_ffn.data(),
                      a.rstd_ffn.data());
      quantize_input(pool, a.h_ffn.data(), N, C, m.packed, a.xhat_ffn, m.precision, m.quantize);
      linear_forward(ctx, m.ternary[sz(L.w_gate)], m.packed, a.xhat_ffn, N, a.gate.data(),
                     m.precision);
      linear_forward(ctx, m.ternary[sz(L.w_up)], m.packed, a.xhat_ffn, N, a.up.data(), m.precision);
      ffn_act_forward(pool, c.ffn_activation, a.gate.data(), a.up.data(), N * F, a.act.data());
      float* act_n = a.act.data();
      if (c.sub_norms) {
        rmsnorm_forward(pool, a.act.data(), val(L.ffn_sub_norm), N, F, c.norm_eps, a.act_n.data(),
                        a.rstd_act_sub.data());
        act_n = a.act_n.data();
      }
      quantize_input(pool, act_n, N, F, m.packed, a.xhat_down, m.precision, m.quantize);
      linear_forward(ctx, m.ternary[sz(L.w_down)], m.packed, a.xhat_down, N, a.y_ffn.data(),
                     m.precision);
      const auto h_ffn = mhc::residual_matrix(ffn_mhc);
      mhc_write_forward(pool, ffn_mhc, h_ffn, a.x_mid.data(), a.y_ffn.data(), N, C, m.x.data());
    }
    // Output: mean of the streams (summed in stream order, as inference), norm, head.
    m.x_final = m.x;
    for (std::int64_t r = 0; r < N; ++r) {
      float* u = m.mean.data() + r * C;
      std::fill_n(u, C, 0.0f);
      for (std::int64_t s = 0; s < n; ++s) {
        const float* xs = m.x_final.data() + (r * n + s) * C;
        for (std::int64_t i = 0; i < C; ++i) u[i] += xs[i] / static_cast<float>(n);
      }
    }
    rmsnorm_forward(pool, m.mean.data(), val(m.output_norm), N, C, c.norm_eps, m.h_out.data(),
                    m.rstd_out.data());
    quantize_input(pool, m.h_out.data(), N, C, m.packed, m.xhat_head, m.precision, m.quantize);
    if (c.tied_embeddings && !m.quantize) {  // a float head: logits = h W_emb^T
      TernaryLinear head;
      head.quantize = false;
      head.out = c.vocab_size;
      head.in = C;
      head.dequant.swap(m.tied_dequant);
      head.dequant16.swap(m.tied_dequant16);
      linear_forward(ctx, head, m.packed, m.xhat_head, N, m.logits.data(), m.precision);
      head.dequant.swap(m.tied_dequant);
      head.dequant16.swap(m.tied_dequant16);
    } else if (c.tied_embeddings) {
      kernels::q8_matmul(*m.tied_q8, m.packed, ctx.isa(), pool, m.logits.data(), sz(c.vocab_size));
    } else {
      linear_forward(ctx, m.ternary[sz(m.output)], m.packed, m.xhat_head, N, m.logits.data(),
                     m.precision);
    }
  }

  void backward(std::span<const std::int32_t> tokens) {
    const std::int64_t N = m.rows, C = c.dim, n = c.mhc_streams, F = c.ffn_dim, seq = m.seq;
    const std::int64_t KVD = c.kv_dim(), V = c.vocab_size;
    auto& pool = ctx.pool();
    auto grad = [&](int i) { return params[sz(i)].grad.data(); };
    const AttentionShape shape{N / seq, seq, c.n_heads, c.n_kv_heads, c.head_dim()};
    auto sized = [](std::vector<float>& v, std::int64_t count) -> std::vector<float>& {
      v.resize(sz(count));
      return v;
    };
    std::vector<float>& d_h = sized(m.d_h, N * C);
    std::vector<float>& d_mean = sized(m.d_mean, N * C);
    // Head.
    if (c.tied_embeddings) {
      linear_backward(pool, m.tied_dequant.data(), m.tied_dequant16.data(), V, C, m.xhat_head,
                      m.d_logits.data(), N, d_h.data(), false, grad(m.embedding), m.precision);
    } else {
      ternary_backward(pool, m.ternary[sz(m.output)], m.xhat_head, m.d_logits.data(), N, d_h.data(),
                       false, grad(m.output), m.precision);
    }
    rmsnorm_backward(pool, m.mean.data(), val(m.output_norm), m.rstd_out.data(), d_h.data(), N, C,
                     d_mean.data(), grad(m.output_norm));
    std::vector<float>& d_x = sized(m.d_x, N * n * C);
    std::vector<float>& d_x_mid = sized(m.d_x_mid, N * n * C);
    for (std::int64_t r = 0; r < N; ++r) {
      for (std::int64_t s = 0; s < n; ++s) {
        for (std::int64_t i = 0; i < C; ++i) {
          d_x[sz((r * n + s) * C + i)] = d_mean[sz(r * C + i)] / static_cast<float>(n);
        }
      }
    }
    std::vector<float>& d_y = sized(m.d_y, N * C);
    std::vector<float>& d_u = sized(m.d_u, N * C);
    std::vector<float>& d_att = sized(m.d_att, N * C);
    std::vector<float>& d_att_n = sized(m.d_att_n, N * C);
    std::vector<float>& d_act = sized(m.d_act, N * F);
    std::vector<float>& d_act_n = sized(m.d_act_n, N * F);
    std::vector<float>& d_gate = sized(m.d_gate, N * F);
    std::vector<float>& d_up = sized(m.d_up, N * F);
    std::vector<float>& d_q = sized(m.d_q, N * C);
    std::vector<float>& d_k = sized(m.d_k, N * KVD);
    std::vector<float>& d_v = sized(m.d_v, N * KVD);
    for (std::int64_t l = c.n_layers - 1; l >= 0; --l) {
      const LayerParams& L = m.layers[sz(l)];
      LayerActs& a = m.acts[sz(l)];
      const mhc::MhcParams attn_mhc =
          mhc_from(L.attn_mhc >= 0 ? &params[sz(L.attn_mhc)] : nullptr, c.mhc_streams);
      const mhc::MhcParams ffn_mhc =
          mhc_from(L.ffn_mhc >= 0 ? &params[sz(L.ffn_mhc)] : nullptr, c.mhc_streams);
      std::vector<float> no_params(1);  // one stream: no mixing parameters, no gradient
      float* d_attn_mhc = L.attn_mhc >= 0 ? grad(L.attn_mhc) : no_params.data();
      float* d_ffn_mhc = L.ffn_mhc >= 0 ? grad(L.ffn_mhc) : no_params.data();
      // Feed-forward, in reverse.
      mhc_write_backward(ffn_mhc, mhc::residual_matrix(ffn_mhc), a.x_mid.data(), a.y_ffn.data(),
                         d_x.data(), N, C, d_x_mid.data(), d_y.data(), d_ffn_mhc);
      ternary_backward(pool, m.ternary[sz(L.w_down)], a.xhat_down, d_y.data(), N,
                       c.sub_norms ? d_act_n.data() : d_act.data(), false, grad(L.w_down),
                       m.precision);
      if (c.sub_norms) {
        rmsnorm_backward(pool, a.act.data(), val(L.ffn_sub_norm), a.rstd_act_sub.data(),
                         d_act_n.data(), N, F, d_act.data(), grad(L.ffn_sub_norm));
      }
      ffn_act_backward(pool, c.ffn_activation, a.gate.data(), a.up.data(), d_act.data(), N * F,
                       d_gate.data(), d_up.data());
      ternary_backward(pool, m.ternary[sz(L.w_gate)], a.xhat_ffn, d_gate.data(), N, d_h.data(),
                       false, grad(L.w_gate), m.precision);
      ternary_backward(pool, m.ternary[sz(L.w_up)], a.xhat_ffn, d_up.data(), N, d_h.data(), true,
                       grad(L.w_up), m.precision);
      rmsnorm_backward(pool, a.u_ffn.data(), val(L.ffn_norm), a.rstd_ffn.data(), d_h.data(), N, C,
                       d_u.data(), grad(L.ffn_norm));
      mhc_read_backward(ffn_mhc, a.x_mid.data(), d_u.data(), N, C, d_x_mid.data(), d_ffn_mhc);
      // Attention, in reverse.
      mhc_write_backward(attn_mhc, mhc::residual_matrix(attn_mhc), a.x_in.data(), a.y_attn.data(),
                         d_x_mid.data(), N, C, d_x.data(), d_y.data(), d_attn_mhc);
      ternary_backward(pool, m.ternary[sz(L.wo)], a.xhat_o, d_y.data(), N,
                       c.sub_norms ? d_att_n.data() : d_att.data(), false, grad(L.wo), m.precision);
      if (c.sub_norms) {
        rmsnorm_backward(pool, a.att.data(), val(L.attn_sub_norm), a.rstd_att_sub.data(),
                         d_att_n.data(), N, C, d_att.data(), grad(L.attn_sub_norm));
      }
      attention_backward(pool, shape, a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                         d_att.data(), d_q.data(), d_k.data(), d_v.data(), m.precision);
      rope_backward(pool, *m.rope, d_q.data(), N, seq, c.n_heads, c.rope_style);
      rope_backward(pool, *m.rope, d_k.data(), N, seq, c.n_kv_heads, c.rope_style);
      ternary_backward(pool, m.ternary[sz(L.wq)], a.xhat_qkv, d_q.data(), N, d_h.data(), false,
                       grad(L.wq), m.precision);
      ternary_backward(pool, m.ternary[sz(L.wk)], a.xhat_qkv, d_k.data(), N, d_h.data(), true,
                       grad(L.wk), m.precision);
      ternary_backward(pool, m.ternary[sz(L.wv)], a.xhat_qkv, d_v.data(), N, d_h.data(), true,
                       grad(L.wv), m.precision);
      rmsnorm_backward(pool, a.u_attn.data(), val(L.attn_norm), a.rstd_attn.data(), d_h.data(), N,
                       C, d_u.data(), grad(L.attn_norm));
      mhc_read_backward(attn_mhc, a.x_in.data(), d_u.data(), N, C, d_x.data(), d_attn_mhc);
    }
    // Embedding: every stream started as the token's row.
    std::vector<float>& d_emb = sized(m.d_emb, N * C);
    std::fill(d_emb.begin(), d_emb.end(), 0.0f);
    for (std::int64_t r = 0; r < N; ++r) {
      for (std::int64_t s = 0; s < n; ++s) {
        kernels::axpy_f32(1.0f, d_x.data() + (r * n + s) * C, d_emb.data() + r * C, C);
      }
    }
    embedding_backward(tokens, d_emb.data(), C, grad(m.embedding));
  }
};

}  // namespace

LossStats TrainModel::train_step(std::span<const std::int32_t> inputs,
                                 std::span<const std::int32_t> targets, std::int64_t batch,
                                 std::int64_t seq, double entropy_weight, float grad_scale) {
  if (inputs.size() != sz(batch * seq) || targets.size() != inputs.size()) {
    fail("train_step: {} inputs and {} targets for a {}x{} batch", inputs.size(), targets.size(),
         batch, seq);
  }
  Forward f{config_, kernels_, params_, *impl_};
  f.run(inputs, batch, seq);
  const LossStats s =
      loss_forward_backward(kernels_.pool(), impl_->logits.data(), targets, config_.vocab_size,
                            entropy_weight, grad_scale, impl_->d_logits.data());
  f.backward(inputs);
  return s;
}

LossStats TrainModel::evaluate(std::span<const std::int32_t> inputs,
                               std::span<const std::int32_t> targets, std::int64_t batch,
                               std::int64_t seq, std::vector<double>* row_ce) {
  Forward f{config_, kernels_, params_, *impl_};
  f.run(inputs, batch, seq);
  const LossStats s = loss_forward_backward(kernels_.pool(), impl_->logits.data(), targets,
                                            config_.vocab_size, 0.0, 1.0f, impl_->d_logits.data());
  if (row_ce != nullptr) {
    row_ce->resize(targets.size());
    const std::int64_t V = config_.vocab_size;
    for (std::size_t r = 0; r < targets.size(); ++r) {
      if (targets[r] < 0) {  // context only
        (*row_ce)[r] = 0;
        continue;
      }
      const float* z = impl_->logits.data() + static_cast<std::int64_t>(r) * V;
      const kernels::LogSumExp l = kernels::log_sum_exp(z, V);
      (*row_ce)[r] = static_cast<double>(l.max) + l.log_sum - z[targets[r]];
    }
  }
  return s;
}

std::vector<float> TrainModel::logits(std::span<const std::int32_t> tokens) {
  Forward f{config_, kernels_, params_, *impl_};
  f.run(tokens, 1, static_cast<std::int64_t>(tokens.size()));
  return std::vector<float>(
      impl_->logits.begin(),
      impl_->logits.begin() + static_cast<std::ptrdiff_t>(tokens.size()) * config_.vocab_size);
}

}  // namespace nanochat::train
