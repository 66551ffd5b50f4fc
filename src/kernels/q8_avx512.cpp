// Q8_0 x int8 with AVX-512 VNNI: two 32-weight blocks per 64-byte register; vpdpbusd of w + 128
// (u8) and x (s8), corrected by -128 * sum(x) per block, gives 8 int32 lanes per block, converted
// and scaled by each block's d in fp32.
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

// N tokens at once. Each 64-byte pair of weight blocks is loaded once and offset to unsigned
// (w + 128, an XOR of the sign bit); per token one vpdpbusd with the int8 activations, starting
// from the correction -128 * (the block's activation sum) in the block's first lane, gives each
// block's exact dot product spread over its 8 lanes. Every token's lanes are summed in the same
// order whatever N is, so a token's results do not depend on the tokens beside it.
template <int N>
void rows_n(const Q8Matrix& w, const PackedActivations& x, const std::int32_t* corrections,
            std::int64_t b0, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
  const std::int64_t blocks = w.cols_padded / 32;
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const std::int8_t* xb[N];
  const std::int32_t* cb[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b0 + t);
    cb[t] = corrections + (b0 + t) * (x.cols_padded / 64) * 16;
  }
  for (std::int64_t r = begin; r < end; ++r) {
    const std::int8_t* q = w.q.data() + r * w.cols_padded;
    const std::uint16_t* d = w.d.data() + r * blocks;
    __m512 acc[N][2];
    for (int t = 0; t < N; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; blk += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(q + blk * 32 + kPrefetchBytes), _MM_HINT_T0);
      const __m512i wu = _mm512_xor_si512(_mm512_load_si512(q + blk * 32), bias);
      const __m512 dv = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(d[blk])),
                                           _mm256_set1_ps(_cvtsh_ss(d[blk + 1])), 1);
      const int parity = static_cast<int>((blk / 2) % 2);
      for (int t = 0; t < N; ++t) {
        const __m512i xv = _mm512_load_si512(xb[t] + blk * 32);
        const __m512i c = _mm512_loadu_si512(cb[t] + blk * 8);
        const __m512i s = _mm512_dpbusd_epi32(c, wu, xv);
        acc[t][parity] = _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(s), acc[t][parity]);
      }
    }
    for (int t = 0; t < N; ++t) {
      y[static_cast<std::size_t>(b0 + t) * ldy + static_cast<std::size_t>(r)] =
          _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1])) *
          x.scales[static_cast<std::size_t>(b0 + t)];
    }
  }
}

void tokens(const Q8Matrix& w, const PackedActivations& x, const std::int32_t* corrections,
            std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
            std::size_t ldy) {
  std::int64_t b = b0;
  for (; b + 4 <= b1; b += 4) rows_n<4>(w, x, corrections, b, begin, end, y, ldy);
  switch (b1 - b) {
    case 3:
      rows_n<3>(w, x, corrections, b, begin, end, y, ldy);
      break;
    case 2:
      rows_n<2>(w, x, corrections, b, begin, end, y, ldy);
      break;
    case 1:
      rows_n<1>(w, x, corrections, b, begin, end, y, ldy);
      break;
    default:
      break;
  }
}

}  // namespace

Q8TokensFn q8_tokens_avx512() { return tokens; }

}  // namespace nanochat::kernels
