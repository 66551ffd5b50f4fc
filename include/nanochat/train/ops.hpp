// Training ops, each a forward/backward pair, in graph order. Shapes are written as in llm.c:
// N = B*T rows (tokens), C = model width, H = heads, D = head size, V = vocabulary.
// Backward functions *accumulate* into parameter gradients (d_w += ...) and, unless said
// otherwise, *overwrite* input gradients. Rows are split over the thread pool; every output
// element is computed by one thread in a fixed order, so results do not depend on timing, and
// runs with the same thread count are bit-identical.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/packed.hpp"
#include "nanochat/kernels/q8.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/model/config.hpp"

namespace nanochat::kernels {
class ThreadPool;
}

namespace nanochat::train {

using kernels::ThreadPool;

// Precision of the float GEMMs (backward and Muon; the forward is int8 either way). kBf16 rounds
// A and B to bfloat16 and accumulates in fp32 — twice fp32's throughput on CPUs with
// AVX512_BF16, as mixed-precision training does on GPUs. Thread-local: set it on the thread that
// calls the ops (the pool's threads follow the caller's setting per call).
enum class GemmPrecision { kF32, kBf16 };
// "auto" and "bf16" mean bf16 when the CPU has AVX512_BF16 and fp32 otherwise; "fp32" is fp32.
GemmPrecision parse_gemm_precision(const std::string& name);
// x (rows, cols), dense, rounded to bf16 (nearest even) into the first rows * cols entries of
// `out` (which only grows), split over the pool.
void round_to_bf16(ThreadPool& pool, const float* x, std::int64_t rows, std::int64_t cols,
                   std::vector<std::uint16_t>& out);
// C[M][N] = op(A)[M][K] * op(B)[K][N] (+ C when `accumulate`) with both operands already in
// bf16, each with the row stride of its stored orientation (A (m, k), or (k, m) when
// transposed; likewise B); rows of C split over the pool. fp32 accumulation (oneDNN).
void gemm_rounded(ThreadPool& pool, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                  std::int64_t k, const std::uint16_t* a16, std::int64_t lda,
                  const std::uint16_t* b16, std::int64_t ldb, float* c, std::int64_t ldc,
                  bool accumulate);

// C[M][N] = op(A)[M][K] * op(B)[K][N] (+ C when `accumulate`), row-major, rows of C split over
// the pool (oneDNN, single-threaded per slice).
void gemm(ThreadPool& pool, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, bool accumulate,
          GemmPrecision precision = GemmPrecision::kF32);

// ---- embedding: out (N, C) = table[tokens] ----
void embedding_forward(std::span<const std::int32_t> tokens, const float* table, std::int64_t c,
                       float* out);
void embedding_backward(std::span<const std::int32_t> tokens, const float* d_out, std::int64_t c,
                        float* d_table);

// ---- RMSNorm: out (N, C) = x * rstd * w, rstd (N) kept for backward ----
void rmsnorm_forward(ThreadPool& pool, const float* x, const float* w, std::int64_t n,
                     std::int64_t c, float eps, float* out, float* rstd);
void rmsnorm_backward(ThreadPool& pool, const float* x, const float* w, const float* rstd,
                      const float* d_out, std::int64_t n, std::int64_t c, float* d_x, float* d_w);

// ---- RoPE on (N, heads, D) in place; position of row r is r % T ----
struct RopeTable {
  std::int64_t head_dim = 0;
  std::vector<float> cos, sin;  // [T][D/2] from kernels::rope_angles, as inference
  RopeTable(std::int64_t t, std::int64_t head_dim, float theta);
};
void rope_forward(ThreadPool& pool, const RopeTable& rope, float* x, std::int64_t n, std::int64_t t,
                  std::int64_t heads, model::RopeStyle style);
void rope_backward(ThreadPool& pool, const RopeTable& rope, float* d_x, std::int64_t n,
                   std::int64_t t, std::int64_t heads, model::RopeStyle style);

// ---- causal grouped-query attention ----
// q (B, T, H, D), k and v (B, T, KV, D) -> out (B, T, H, D); probs (B, H, T, T) kept.
struct AttentionShape {
  std::int64_t b, t, heads, kv_heads, head_dim;
};
void attention_forward(ThreadPool& pool, const AttentionShape& s, const float* q, const float* k,
                       const float* v, float* out, float* probs);
// d_q overwritten; d_k and d_v overwritten.
void attention_backward(ThreadPool& pool, const AttentionShape& s, const float* q, const float* k,
                        const float* v, const float* probs, const float* d_out, float* d_q,
                        float* d_k, float* d_v, GemmPrecision precision = GemmPrecision::kF32);

// ---- ternary linear: y (N, out) = ternary(W) (out, in) x int8(x) (N, in) ----
// Forward quantizes exactly as inference does: W to absmean trits with an fp16 scale, x per
// token to int8, products summed in int32 by the kernels. Backward is straight-through: the
// quantizers pass gradients unchanged, so d_x = d_y * (s q) and d_W = d_y^T * dequant(x_q).
struct TernaryLinear {
  std::int64_t in = 0, out = 0;
  // false (model.quantization = "none", for measuring the ternary gap): the layer is a plain
  // float linear layer — dequant holds the latent weights, inputs are not quantized and the
  // forward is a float GEMM; nothing is packed for the kernels.
  bool quantize = true;
  float scale = 0;                       // fp16-exact absmean scale
  std::vector<std::int8_t> trits;        // (out, in)
  std::vector<float> dequant;            // (out, in) = trits * scale, for backward
  std::vector<std::uint16_t> dequant16;  // the same in bf16, when the backward runs in bf16
  kernels::PackedMatrix packed;
};
// A layer input the backward reads in its weight-gradient GEMM: fp32, or in bf16 (rounded once
// by the forward) when the GEMMs run in bf16 — whichever the precision needs, not both.
struct GemmInput {
  std::vector<float> f32;
  std::vector<std::uint16_t> bf16;
};
// Re-quantizes from the latent weights `w` (out, in), packed in the layout the kernels' plan
// for `tokens` tokens per call wants.
void ternary_prepare(kernels::KernelContext& ctx, const float* w, std::int64_t out, std::int64_t in,
                     TernaryLinear& layer, GemmPrecision precision = GemmPrecision::kF32,
                     std::int64_t tokens = 1);
// Quantizes x (N, in) per token; x_hat (N, in) receives the dequantized activations. With
// quantize = false, x_hat is x itself (rounded to bf16 for bf16 GEMMs) and acts is not touched.
void quantize_input(ThreadPool& pool, const float* x, std::int64_t n, std::int64_t in,
                    kernels::PackedActivations& acts, GemmInput& x_hat,
                    GemmPrecision precision = GemmPrecision::kF32, bool quantize = true);
void ternary_forward(kernels::KernelContext& ctx, const TernaryLinear& layer,
                     const kernels::PackedActivations& acts, float* y);
// y (N, out): the ternary forward, or for a layer with quantize = false the float GEMM
// x_hat (N, in) W^T at `precision`.
void linear_forward(kernels::KernelContext& ctx, const TernaryLinear& layer,
                    const kernels::PackedActivations& acts, const GemmInput& x_hat, std::int64_t n,
                    float* y, GemmPrecision precision);
// The backward of y (N, out) = x_hat (N, in) W^T for weights W (out, in) given in fp32 and, for
// bf16 GEMMs, in bf16: d_x = d_y W — overwritten, or added to when `accumulate_dx` (inputs shared
// by several layers) — and d_W += d_y^T x_hat. d_y is rounded once for both products.
void linear_backward(ThreadPool& pool, const float* w, const std::uint16_t* w16, std::int64_t out,
                     std::int64_t in, const GemmInput& x_hat, const float* d_y, std::int64_t n,
                     float* d_x, bool accumulate_dx, float* d_w, GemmPrecision precision);
// linear_backward through the layer's dequantized trits (straight-through).
void ternary_backward(ThreadPool& pool, const TernaryLinear& layer, const GemmInput& x_hat,
                      const float* d_y, std::int64_t n, float* d_x, bool accumulate_dx, float* d_w,
                      GemmPrecision precision = GemmPrecision::kF32);

// ---- Q8_0 head (tied embedding): y (N, V) = q8(table) (V, C) x int8(x) ----
// The table is quantized to Q8_0 as inference does at load (kernels::quantize_q8_0_matrix);
// backward is straight-through through these dequantized values, out (rows, cols).
void q8_dequantize(const kernels::Q8Matrix& m, float* out);

// ---- gated FFN activation: h (N, F) = act(gate) * up ----
void ffn_act_forward(ThreadPool& pool, model::FfnActivation act, const float* gate, const float* up,
                     std::int64_t count, float* h);
void ffn_act_backward(ThreadPool& pool, model::FfnActivation act, const float* gate,
                      const float* up, const float* d_h, std::int64_t count, float* d_gate,
                      float* d_up);

// ---- mHC-lite read/write over streams x (N, n, C) ----
// u (N, C) = sum_j h_pre[j] x_j, rows split over the pool
void mhc_read_forward(ThreadPool& pool, const mhc::MhcParams& p, const float* x,
                      std::int64_t n_rows, std::int64_t c, float* u);
// d_x (N, n, C) += h_pre[j] d_u; d_params (mhc::packed_layout order): d_h_pre += sum x_j . d_u
void mhc_read_backward(const mhc::MhcParams& p, const float* x, const float* d_u,
                       std::int64_t n_rows, std::int64_t c, float* d_x, float* d_params);
// x_new (N, n, C) = H x_old + h_post y, rows split over the pool
void mhc_write_forward(ThreadPool& pool, const mhc::MhcParams& p, std::span<const float> h,
                       const float* x_old, const float* y, std::int64_t n_rows, std::int64_t c,
                       float* x_new);
// From d_x_new: d_x_old (overwritten), d_y (overwritten), d_params (h_post and res logits) +=.
void mhc_write_backward(const mhc::MhcParams& p, std::span<const float> h, const float* x_old,
                        const float* y, const float* d_x_new, std::int64_t n_rows, std::int64_t c,
                        float* d_x_old, float* d_y, float* d_params);

// ---- loss over logits (N, V): cross-entropy minus entropy_weight * entropy ----
struct LossStats {
  double loss = 0, ce = 0, entropy = 0;  // means over rows
};
// d_logits (N, V) receives d(mean loss)/d logits scaled by `grad_scale` (1 / accumulation).
LossStats loss_forward_backward(ThreadPool& pool, const float* logits,
                                std::span<const std::int32_t> targets, std::int64_t v,
                                double entropy_weight, float grad_scale, float* d_logits);

}  // namespace nanochat::train
