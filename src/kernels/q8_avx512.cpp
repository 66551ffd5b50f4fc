// Q8_0 x int8 with AVX-512 VNNI: two 32-weight blocks per 64-byte register; vpdpbusd of |w| (u8)
// and x negated where w < 0 (s8) gives 8 int32 lanes per block, converted and scaled by each
// block's d in fp32.
#include <immintrin.h>

#include <cstdint>

#include "nanochat/kernels/q8.hpp"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace nanochat::kernels {
namespace {

// Prefetch distance along the int8 weights: 8 KiB decoded the 2B model's Q8_0 head 1.5-2.5%
// faster than 4 KiB (nanochat benchmark model, tg32 at 1 thread); 16 KiB was no better.
constexpr long kPrefetchBytes = 8192;

void rows(const Q8Matrix& w, const PackedActivations& x, std::int64_t b, std::int64_t begin,
          std::int64_t end, float* y) {
  const std::int8_t* xb = x.token(b);
  const float xs = x.scales[static_cast<std::size_t>(b)];
  const std::int64_t blocks = w.cols_padded / 32;
  const __m512i zero = _mm512_setzero_si512();
  for (std::int64_t r = begin; r < end; ++r) {
    const std::int8_t* q = w.q.data() + r * w.cols_padded;
    const std::uint16_t* d = w.d.data() + r * blocks;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; blk += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(q + blk * 32 + kPrefetchBytes), _MM_HINT_T0);
      const __m512i wv = _mm512_load_si512(q + blk * 32);
      const __m512i xv = _mm512_load_si512(xb + blk * 32);
      const __mmask64 neg = _mm512_movepi8_mask(wv);
      const __m512i sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
      const __m512i s = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), sx);
      const __m512 dv = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(d[blk])),
                                           _mm256_set1_ps(_cvtsh_ss(d[blk + 1])), 1);
      if ((blk / 2) % 2 == 0) {
        acc0 = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(s), acc0);
      } else {
        acc1 = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(s), acc1);
      }
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * xs;
  }
}

}  // namespace

Q8RowsFn q8_rows_avx512() { return rows; }

}  // namespace nanochat::kernels
