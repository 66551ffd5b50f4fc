#include "nanochat/kernels/vec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/util/clones.hpp"
#include "nanochat/util/cpu.hpp"
#include "vec_internal.hpp"

namespace nanochat::kernels {
namespace {

// A 16-lane dot product reduced as a tree (4 dependent adds instead of 16), inlined into
// attention_row's clones.
[[gnu::always_inline]] inline float dot16(const float* a, const float* b, std::int64_t n) {
  float lanes[16] = {};
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lanes[j] += a[i + j] * b[i + j];
  }
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
  }
  float sum = lanes[0];
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// e^x for x <= 0 (softmax arguments), within ~2 ulp of expf: Cody-Waite reduction by ln 2 and
// Cephes' degree-6 polynomial, written so the compiler vectorizes a loop of them (a libm call
// per score cost a third of attention).
[[gnu::always_inline]] inline float exp_core(float x) {  // x in [-87, 88]
  constexpr float kMagic = 12582912.0f;                  // 1.5 * 2^23: round to nearest even
  const float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

// The clamps are written so that a NaN argument (scores of a model whose activations overflowed)
// becomes -87, not a NaN converted to an integer inside exp_core.
[[gnu::always_inline]] inline float exp_nonpositive(float x) {
  return exp_core(x > -87.0f ? x : -87.0f);
}

// e^x for any x, clamped to [-87, 88] (the range whose powers of two are normal floats).
[[gnu::always_inline]] inline float exp_any(float x) {
  return exp_core(std::min(x > -87.0f ? x : -87.0f, 88.0f));
}

// out (d) = sum_j p[j] values[j * stride ..]: attention's weighted sum of values, each lane
// summed in key order, where no AVX-512 kernel keeps the head in registers. (Multiplies and adds
// stay separate, so every x86-64 level gives the same bits.)
[[gnu::always_inline]] inline void weighted_sum(const float* p, const float* values,
                                                std::int64_t stride, std::int64_t len,
                                                std::int64_t d, float* out) {
  std::fill_n(out, d, 0.0f);
  for (std::int64_t j = 0; j < len; ++j) {
    const float w = p[j];
    const float* v = values + j * stride;
    for (std::int64_t i = 0; i < d; ++i) out[i] += w * v[i];
  }
}

}  // namespace

// Sixteen independent lanes let the compiler vectorize the sum without reordering it freely.
LogSumExp log_sum_exp(const float* z, std::int64_t n) {
  const float top = *std::max_element(z, z + n);
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(z[i] - top));
  return {top, std::log(sum)};
}

NANOCHAT_CLONES void scale_i32(const std::int32_t* x, const float* row_scales, float scale,
                               float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i]) * row_scales[i] * scale;
}

NANOCHAT_CLONES float dot_f32(const float* a, const float* b, std::int64_t n) {
  float lanes[16] = {};
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lanes[j] += a[i + j] * b[i + j];
  }
  float sum = 0;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (float lane : lanes) sum += lane;
  return sum;
}

NANOCHAT_CLONES double sum_f64(const float* x, std::int64_t n) {
  double lanes[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lanes[j] += static_cast<double>(x[i + j]);
  }
  for (int w = 4; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
  }
  double total = lanes[0];
  for (; i < n; ++i) total += static_cast<double>(x[i]);
  return total;
}

NANOCHAT_CLONES double dot_f64(const float* a, const float* b, std::int64_t n) {
  double lanes[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lanes[j] += static_cast<double>(a[i + j]) * b[i + j];
  }
  for (int w = 4; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
  }
  double total = lanes[0];
  for (; i < n; ++i) total += static_cast<double>(a[i]) * b[i];
  return total;
}

NANOCHAT_CLONES float max_f32(const float* x, std::int64_t n) {
  float lanes[16];
  for (float& l : lanes) l = x[0];
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lanes[j] = lanes[j] > x[i + j] ? lanes[j] : x[i + j];
  }
  float top = lanes[0];
  for (float l : lanes) top = top > l ? top : l;
  for (; i < n; ++i) top = top > x[i] ? top : x[i];
  return top;
}

void rope_angles(std::int64_t pos0, std::int64_t count, std::int64_t head_dim, float theta,
                 std::vector<float>& cos_out, std::vector<float>& sin_out) {
  const std::int64_t half = head_dim / 2;
  cos_out.resize(static_cast<std::size_t>(count * half));
  sin_out.resize(cos_out.size());
  for (std::int64_t i = 0; i < half; ++i) {
    const double freq = std::pow(static_cast<double>(theta),
                                 -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    for (std::int64_t t = 0; t < count; ++t) {
      const double angle = static_cast<double>(pos0 + t) * freq;
      cos_out[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(angle));
      sin_out[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::sin(angle));
    }
  }
}

NANOCHAT_CLONES void rope_rotate(float* x, std::int64_t heads, std::int64_t head_dim,
                                 const float* cos, const float* sin, float direction,
                                 bool adjacent) {
  const std::int64_t half = head_dim / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    float* p = x + h * head_dim;
    if (adjacent) {
      for (std::int64_t i = 0; i < half; ++i) {
        const float c = cos[i], s = direction * sin[i];
        const float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * c - b * s;
        p[2 * i + 1] = a * s + b * c;
      }
    } else {
      for (std::int64_t i = 0; i < half; ++i) {
        const float c = cos[i], s = direction * sin[i];
        const float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = a * s + b * c;
      }
    }
  }
}

double sum_squares(const float* x, std::int64_t n) { return dot_f64(x, x, n); }

float rms_inverse(const float* x, std::int64_t n, float eps) {
  return static_cast<float>(1.0 / std::sqrt(sum_squares(x, n) / static_cast<double>(n) + eps));
}

NANOCHAT_CLONES void axpby_f32(float a, const float* x, float b, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = a * x[i] + b * y[i];
}

NANOCHAT_CLONES void axpy_f32(float w, const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += w * x[i];
}

}  // namespace nanochat::kernels

namespace nanochat::kernels {

NANOCHAT_CLONES void softmax_inplace(float* p, std::int64_t len) {
  // The largest in sixteen lanes (one serial max per element would be a chain of dependent
  // maxss); any order gives the same maximum.
  const float top = len > 0 ? max_f32(p, len) : 0.0f;
  for (std::int64_t j = 0; j < len; ++j) p[j] = exp_nonpositive(p[j] - top);
  float lanes[8] = {};
  std::int64_t j8 = 0;
  for (; j8 + 8 <= len; j8 += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += p[j8 + l];
  }
  for (int w = 4; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
  }
  float sum = lanes[0];
  for (; j8 < len; ++j8) sum += p[j8];
  const float inv = 1.0f / sum;
  for (std::int64_t j = 0; j < len; ++j) p[j] *= inv;
}

NANOCHAT_CLONES void attention_row(const float* q, const float* keys, const float* values,
                                   std::int64_t stride, std::int64_t len, std::int64_t d,
                                   float scale, float* p, float* out) {
  static const bool avx512 = isa_supported(Isa::kAvx512, cpu_info().features);
  if (avx512) {
    detail::attention_scores_avx512(q, keys, stride, 0, len, d, scale, p);
  } else {
    for (std::int64_t j = 0; j < len; ++j) p[j] = dot16(q, keys + j * stride, d) * scale;
  }
  softmax_inplace(p, len);
  if (avx512 && detail::attention_values_avx512(p, values, stride, len, d, out)) return;
  weighted_sum(p, values, stride, len, d, out);
}

NANOCHAT_CLONES void attention_rows(const float* q, std::int64_t q_stride, std::int64_t n,
                                    std::int64_t start, const float* keys, const float* values,
                                    std::int64_t stride, std::int64_t d, float scale, float* p,
                                    std::int64_t p_stride, float* out, std::int64_t out_stride) {
  static const bool avx512 = isa_supported(Isa::kAvx512, cpu_info().features);
  if (!avx512) {
    for (std::int64_t i = 0; i < n; ++i) {
      attention_row(q + i * q_stride, keys, values, stride, start + i + 1, d, scale,
                    p + i * p_stride, out + i * out_stride);
    }
    return;
  }
  // Scores a key block at a time: sixteen keys against every query that reaches them, each
  // block computed exactly as attention_row's pass over all keys computes it.
  for (std::int64_t j0 = 0; j0 < start + n; j0 += 16) {
    // Queries that reach only part of the block, then those that reach all of it.
    const std::int64_t full = std::clamp<std::int64_t>(j0 + 15 - start, 0, n);
    for (std::int64_t i = std::max<std::int64_t>(0, j0 - start); i < full; ++i) {
      detail::attention_scores_avx512(q + i * q_stride, keys, stride, j0, start + i + 1, d, scale,
                                      p + i * p_stride);
    }
    detail::attention_scores_block_avx512(q + full * q_stride, q_stride, n - full, keys, stride, j0,
                                          d, scale, p + full * p_stride, p_stride);
  }
  for (std::int64_t i = 0; i < n; ++i) softmax_inplace(p + i * p_stride, start + i + 1);
  if (detail::attention_values_rows_avx512(p, p_stride, n, start, values, stride, d, out,
                                           out_stride)) {
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {  // a head too wide (or ragged) for the registers
    weighted_sum(p + i * p_stride, values, stride, start + i + 1, d, out + i * out_stride);
  }
}

}  // namespace nanochat::kernels

namespace nanochat::kernels {

NANOCHAT_CLONES void exp_shifted(const float* z, float shift, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = exp_nonpositive(z[i] - shift);
}

NANOCHAT_CLONES void to_bf16(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                             std::uint16_t* out) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * ld;
    std::uint16_t* dst = out + r * cols;
    for (std::int64_t j = 0; j < cols; ++j) {
      std::uint32_t bits;
      std::memcpy(&bits, &src[j], 4);
      bits += 0x7FFFu + ((bits >> 16) & 1u);
      dst[j] = static_cast<std::uint16_t>(bits >> 16);
    }
  }
}

}  // namespace nanochat::kernels

namespace nanochat::kernels {

NANOCHAT_CLONES void gated_activation(const float* gate, const float* up, float* out,
                                      std::int64_t n, bool relu2) {
  if (relu2) {
    for (std::int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      out[i] = (g > 0 ? g * g : 0.0f) * up[i];
    }
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_any(-g)) * up[i];
  }
}

NANOCHAT_CLONES void sigmoid_f32(const float* x, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = 1.0f / (1.0f + exp_any(-x[i]));
}

}  // namespace nanochat::kernels
