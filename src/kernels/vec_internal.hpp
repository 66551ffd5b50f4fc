// Internal to src/kernels: per-ISA parts of the float helpers in vec.cpp.
#pragma once

#include <cstdint>

namespace nanochat::kernels::detail {

// p[j] = scale * (q . keys[j * stride .. + d]) for begin <= j < end, reading key rows below end
// only; AVX-512 F only. Each score is the same whatever the range around it.
void attention_scores_avx512(const float* q, const float* keys, std::int64_t stride,
                             std::int64_t begin, std::int64_t end, std::int64_t d, float scale,
                             float* p);

// out[0 .. d) = sum_j p[j] values[j * stride .. + d], each lane summed in key order by fused
// multiply-adds (what the vectorized loop in attention_row computes); false, and nothing written,
// unless d is a multiple of 16 up to 128. AVX-512 F only.
bool attention_values_avx512(const float* p, const float* values, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float* out);

// attention_scores_avx512 for the sixteen keys [j0, j0 + 16) and n queries (query i at
// q + i * q_stride, its scores at p + i * p_stride + j0), each of which reaches all sixteen.
void attention_scores_block_avx512(const float* q, std::int64_t q_stride, std::int64_t n,
                                   const float* keys, std::int64_t stride, std::int64_t j0,
                                   std::int64_t d, float scale, float* p, std::int64_t p_stride);

// attention_values_avx512 for n consecutive queries of one head, query i's len start + i + 1
// probabilities in row p + i * p_stride and its output at out + i * out_stride: the same bits as
// n separate calls, with each value row loaded once for several queries.
bool attention_values_rows_avx512(const float* p, std::int64_t p_stride, std::int64_t n,
                                  std::int64_t start, const float* values, std::int64_t stride,
                                  std::int64_t d, float* out, std::int64_t out_stride);

}  // namespace nanochat::kernels::detail
