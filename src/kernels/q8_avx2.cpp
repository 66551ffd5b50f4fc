// Q8_0 x int8 with AVX2: |w| (u8) times x signed by w (s8) through vpmaddubsw — pairs stay within
// int16 since |w|, |x| <= 127 — then vpmaddwd to int32 per 32-weight block, scaled in fp32.
#include <immintrin.h>

#include <cstdint>

#include "nanochat/kernels/q8.hpp"

namespace nanochat::kernels {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

void rows(const Q8Matrix& w, const PackedActivations& x, std::int64_t b, std::int64_t begin,
          std::int64_t end, float* y) {
  const std::int8_t* xb = x.token(b);
  const float xs = x.scales[static_cast<std::size_t>(b)];
  const std::int64_t blocks = w.cols_padded / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::int64_t r = begin; r < end; ++r) {
    const std::int8_t* q = w.q.data() + r * w.cols_padded;
    const std::uint16_t* d = w.d.data() + r * blocks;
    __m256 acc = _mm256_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + blk * 32));
      const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xb + blk * 32));
      const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
      const __m256i s = _mm256_madd_epi16(p, ones);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(d[blk])), _mm256_cvtepi32_ps(s), acc);
    }
    y[r] = hsum(acc) * xs;
  }
}

}  // namespace

Q8RowsFn q8_rows_avx2() { return rows; }

}  // namespace nanochat::kernels
