// Internal to src/kernels: per-ISA parts of the float helpers in vec.cpp.
#pragma once

#include <cstdint>

namespace nanochat::kernels::detail {

// p[j] = scale * (q . keys[j * stride .. + d]) for j < len; AVX-512 F only.
void attention_scores_avx512(const float* q, const float* keys, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float scale, float* p);

// out[0 .. d) = sum_j p[j] values[j * stride .. + d], each lane summed in key order by fused
// multiply-adds (what the vectorized loop in attention_row computes); false, and nothing written,
// unless d is a multiple of 16 up to 128. AVX-512 F only.
bool attention_values_avx512(const float* p, const float* values, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float* out);

}  // namespace nanochat::kernels::detail
