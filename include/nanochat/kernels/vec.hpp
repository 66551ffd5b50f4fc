// Float vector helpers for attention (inference and training), cloned per ISA by the compiler
// (x86-64-v4, -v3, baseline) and picked by the loader for the CPU at hand.
#pragma once

#include <cstdint>
#include <vector>

namespace nanochat::kernels {

// sum_i a[i] * b[i], summed in 16 independent lanes (a fixed order for a given ISA).
float dot_f32(const float* a, const float* b, std::int64_t n);

// sum_i x[i]^2 in double, in eight lanes (a fixed order for a given ISA).
double sum_squares(const float* x, std::int64_t n);

// sum_i x[i] and sum_i a[i] * b[i] in double, in eight lanes.
double sum_f64(const float* x, std::int64_t n);
double dot_f64(const float* a, const float* b, std::int64_t n);

// max_i x[i] (n >= 1), in sixteen lanes.
float max_f32(const float* x, std::int64_t n);

// cos and sin of pos * theta^(-2i / head_dim) for each pair i, computed in double, for positions
// [pos0, pos0 + count): [count][head_dim / 2] each. Inference and training both build their
// tables with this, so the rotations agree exactly.
void rope_angles(std::int64_t pos0, std::int64_t count, std::int64_t head_dim, float theta,
                 std::vector<float>& cos_out, std::vector<float>& sin_out);

// Rotary embedding of `heads` heads of head_dim values each: pairs (2i, 2i+1) when `adjacent`,
// else (i, i + head_dim/2), turned by the angle whose cosine and sine are cos[i] and
// direction * sin[i] (direction -1 applies the inverse rotation: the backward). Inference and
// training both call this.
void rope_rotate(float* x, std::int64_t heads, std::int64_t head_dim, const float* cos,
                 const float* sin, float direction, bool adjacent);

// 1 / sqrt(mean(x[i]^2) + eps): RMSNorm's scale, the squares summed in double in eight lanes.
// Inference and training both call this.
float rms_inverse(const float* x, std::int64_t n, float eps);

// y[i] = a * x[i] + b * y[i] (x may alias y)
void axpby_f32(float a, const float* x, float b, float* y, std::int64_t n);

// y[i] += w * x[i]
void axpy_f32(float w, const float* x, float* y, std::int64_t n);

// y[i] = float(x[i]) * row_scales[i] * scale: a GEMM's exact int32 sums to floats, in that order.
void scale_i32(const std::int32_t* x, const float* row_scales, float scale, float* y,
               std::int64_t n);

// out[i] = exp(z[i] - shift) for z[i] <= shift (softmax numerators), vectorized, within ~2 ulp.
void exp_shifted(const float* z, float shift, float* out, std::int64_t n);

// The log-softmax normalizer log(sum_i e^z[i]) = max + log_sum, with max = max_i z[i] and
// log_sum = log(sum_i e^(z[i] - max)): each exponential and the sum in double, in index order
// (not cloned, not vectorized), so scoring and validation give the same figures on every ISA.
// log p(t) = double(z[t] - max) - log_sum.
struct LogSumExp {
  float max;
  double log_sum;
};
LogSumExp log_sum_exp(const float* z, std::int64_t n);

// Gated FFN activations, out[i] = act(gate[i]) * up[i] (out may alias gate): SwiGLU
// g / (1 + e^-g) or squared ReLU. Inference and training both call this, so they agree bit for
// bit. `relu2` selects the squared ReLU.
void gated_activation(const float* gate, const float* up, float* out, std::int64_t n, bool relu2);

// out[i] = 1 / (1 + e^-x[i]) with the same exponential.
void sigmoid_f32(const float* x, float* out, std::int64_t n);

// Rounds fp32 to bf16 (nearest even) for a rows x cols block with row stride ld into a packed
// rows x cols array.
void to_bf16(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld,
             std::uint16_t* out);

// p[j] = softmax_j(p[j]) in place: the largest subtracted, exp_shifted's exponential, the sum in
// eight lanes, then one multiply by its reciprocal (attention_row's order).
void softmax_inplace(float* p, std::int64_t len);

// One query of causal attention over `len` cached positions whose key and value rows are
// `stride` floats apart: p[j] = softmax_j(q . k_j * scale), out (d) = sum_j p[j] v_j. Inference
// and training both call this, so their attention agrees bit for bit.
void attention_row(const float* q, const float* keys, const float* values, std::int64_t stride,
                   std::int64_t len, std::int64_t d, float scale, float* p, float* out);

// attention_row for n consecutive queries of one sequence and head: query i (at q + i * q_stride)
// attends to the first start + i + 1 positions, its probabilities go to p + i * p_stride and its
// output to out + i * out_stride. Bit for bit what n calls of attention_row give, but computed a
// block of sixteen keys at a time for all queries (the block stays in cache) and several queries
// per pass over the values.
void attention_rows(const float* q, std::int64_t q_stride, std::int64_t n, std::int64_t start,
                    const float* keys, const float* values, std::int64_t stride, std::int64_t d,
                    float scale, float* p, std::int64_t p_stride, float* out,
                    std::int64_t out_stride);

}  // namespace nanochat::kernels
