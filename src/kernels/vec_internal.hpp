// Internal to src/kernels: per-ISA parts of the float helpers in vec.cpp.
#pragma once

#include <cstdint>

namespace nanochat::kernels::detail {

// p[j] = scale * (q . keys[j * stride .. + d]) for j < len; AVX-512 F only.
void attention_scores_avx512(const float* q, const float* keys, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float scale, float* p);

}  // namespace nanochat::kernels::detail
