#include "nanochat/kernels/vec.hpp"

namespace nanochat::kernels {

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
