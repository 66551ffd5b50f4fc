#include "nanochat/kernels/vec.hpp"

#include <algorithm>
#include <cmath>

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

}  // namespace

// Sixteen independent lanes let the compiler vectorize the sum without reordering it freely.
[[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]] float dot_f32(
    const float* a, const float* b, std::int64_t n) {
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

[[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]] void axpy_f32(
    float w, const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += w * x[i];
}

}  // namespace nanochat::kernels

namespace nanochat::kernels {

[[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]] void attention_row(
    const float* q, const float* keys, const float* values, std::int64_t stride, std::int64_t len,
    std::int64_t d, float scale, float* p, float* out) {
  float top = -INFINITY;
  for (std::int64_t j = 0; j < len; ++j) {
    p[j] = dot16(q, keys + j * stride, d) * scale;
    top = std::max(top, p[j]);
  }
  float sum = 0;
  for (std::int64_t j = 0; j < len; ++j) {
    p[j] = std::exp(p[j] - top);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
  std::fill_n(out, d, 0.0f);
  for (std::int64_t j = 0; j < len; ++j) {
    p[j] *= inv;
    const float w = p[j];
    const float* v = values + j * stride;
    for (std::int64_t i = 0; i < d; ++i) out[i] += w * v[i];
  }
}

}  // namespace nanochat::kernels
