// BitNet b1.58 quantizers (DESIGN.md, "Math").
//
// Weights (absmean): over each quantization group, s = max(mean|W|, kScaleEps) and
//   q = clamp(round(W / s), -1, 1), so W ~= q * s.
// Activations (absmax, per token): m = max(max|x|, kScaleEps) and
//   x_q = clamp(round(x * 127 / m), -128, 127), so x ~= x_q * m / 127.
// Rounding is to nearest, ties to even (PyTorch's round), so training and inference agree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace nanochat::ternary {

inline constexpr float kScaleEps = 1e-5f;

// A ternary matrix in canonical form: row-major trits plus one scale per group.
struct TernaryTensor {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  // Weights per scale along a row; 0 means one scale for the whole tensor.
  std::int64_t group = 0;
  std::vector<std::int8_t> trits;  // rows * cols, in {-1, 0, +1}
  std::vector<float> scales;       // 1, or rows * cols / group

  float scale_at(std::int64_t row, std::int64_t col) const {
    return group == 0 ? scales[0] : scales[static_cast<std::size_t>((row * cols + col) / group)];
  }
};

// Absmean quantization of a row-major [rows x cols] matrix. group == 0: per tensor; otherwise the
// group size along each row (e.g. 256, one TQ block), which must divide cols — a partial group
// would get a scale from fewer weights than its neighbours, so it is rejected with an Error.
TernaryTensor quantize_absmean(std::span<const float> weights, std::int64_t rows, std::int64_t cols,
                               std::int64_t group = 0);

// Per-tensor absmean quantization into caller-owned trits (same results as quantize_absmean with
// group 0); returns the scale. trits.size() must equal weights.size().
float quantize_absmean_into(std::span<const float> weights, std::span<std::int8_t> trits);

// Absmax int8 quantization of `tokens` rows of `cols` activations. x is [tokens][cols]
// row-major; q is [tokens][q_stride] (q_stride >= cols; the padding is left untouched).
// scales[t] = m / 127, so x ~= q * scales[t].
void quantize_activations(const float* x, std::int64_t tokens, std::int64_t cols, std::int8_t* q,
                          std::size_t q_stride, float* scales);

}  // namespace nanochat::ternary
