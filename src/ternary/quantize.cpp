#include "nanochat/ternary/quantize.hpp"

#include <algorithm>
#include <cmath>

#include "nanochat/util/clones.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::ternary {
namespace {

// Round to nearest, ties to even — what std::nearbyint does in the default rounding mode — for
// |x| < 2^22, inline: adding 1.5 * 2^23 leaves no fraction bits, so the FPU rounds (this runs on
// every weight and activation of every training step; the libm call cost 10% of a step).
inline float round_even(float x) {
  constexpr float kMagic = 12582912.0f;
  return (x + kMagic) - kMagic;
}

std::int8_t ternarize(float w, float inv_scale) {
  // Written as selects: a NaN weight becomes -1 instead of an undefined conversion (and
  // std::fmax/fmin would be library calls).
  float v = w * inv_scale;
  v = v >= -2.0f ? v : -2.0f;
  v = v <= 2.0f ? v : 2.0f;
  const float r = round_even(v);
  return static_cast<std::int8_t>(std::clamp(r, -1.0f, 1.0f));
}

// One absmean group: scale = max(mean |w|, eps), trits = ternarize(w / scale). Returns the scale.
// Cloned per ISA (identical results: no step can be fused differently).
NANOCHAT_CLONES float quantize_group(const float* w, std::size_t n, std::int8_t* trits) {
  // Double: per-tensor sums run over millions of weights; eight lanes keep the adds from
  // waiting on each other (the trainer re-quantizes every matrix every step).
  double lanes[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t j = 0; j < 8; ++j) lanes[j] += std::fabs(w[i + j]);
  }
  double sum = 0;
  for (; i < n; ++i) sum += std::fabs(w[i]);
  for (double lane : lanes) sum += lane;
  const float scale = std::max(
      static_cast<float>(sum / static_cast<double>(std::max<std::size_t>(n, 1))), kScaleEps);
  const float inv = 1.0f / scale;
  for (i = 0; i < n; ++i) trits[i] = ternarize(w[i], inv);
  return scale;
}

}  // namespace

TernaryTensor quantize_absmean(std::span<const float> weights, std::int64_t rows, std::int64_t cols,
                               std::int64_t group) {
  if (rows < 0 || cols <= 0 || static_cast<std::size_t>(rows * cols) != weights.size()) {
    fail("quantize_absmean: {} weights do not form a {}x{} matrix", weights.size(), rows, cols);
  }
  if (group < 0 || (group > 0 && cols % group != 0)) {
    fail("quantize_absmean: group size {} does not divide the row length {}", group, cols);
  }
  TernaryTensor t;
  t.rows = rows;
  t.cols = cols;
  t.group = group;
  t.trits.resize(weights.size());
  const std::size_t span = group == 0 ? weights.size() : static_cast<std::size_t>(group);
  const std::size_t groups = weights.size() / span;
  t.scales.resize(groups);
  for (std::size_t g = 0; g < groups; ++g) {
    t.scales[g] = quantize_group(weights.data() + g * span, span, t.trits.data() + g * span);
  }
  return t;
}

float quantize_absmean_into(std::span<const float> weights, std::span<std::int8_t> trits) {
  if (trits.size() != weights.size()) {
    fail("quantize_absmean_into: {} weights but room for {} trits", weights.size(), trits.size());
  }
  return quantize_group(weights.data(), weights.size(), trits.data());
}

// Cloned per ISA like quantize_group; every clone computes the same codes.
NANOCHAT_CLONES void quantize_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                                          std::int8_t* q, std::size_t q_stride, float* scales) {
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * cols;
    std::int8_t* out = q + static_cast<std::size_t>(t) * q_stride;
    // Sixteen lanes: a single running maximum is a serial chain the compiler cannot split.
    float lanes[16] = {};
    std::int64_t i = 0;
    for (; i + 16 <= cols; i += 16) {
      for (int j = 0; j < 16; ++j) {
        const float a = std::fabs(row[i + j]);
        lanes[j] = a > lanes[j] ? a : lanes[j];  // a NaN is passed over, as std::max does
      }
    }
    float amax = kScaleEps;
    for (float l : lanes) amax = l > amax ? l : amax;
    for (; i < cols; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float mul = 127.0f / amax;
    for (std::int64_t k = 0; k < cols; ++k) {
      // |x * mul| <= 127; the selects send a NaN to -128 (no undefined conversion).
      float v = row[k] * mul;
      v = v >= -128.0f ? v : -128.0f;
      v = v <= 127.0f ? v : 127.0f;
      const float r = round_even(v);
      out[k] = static_cast<std::int8_t>(r);
    }
    scales[t] = amax / 127.0f;
  }
}

}  // namespace nanochat::ternary
