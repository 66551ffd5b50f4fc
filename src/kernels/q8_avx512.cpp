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

// Prefetch distance along the int8 weights. On a Zen 5 VM reading ~26 GB/s at one thread, one
// token over a 2B model's head (bench_kernels head/q8_0) took 22.6 ms with two rows at a time
// and 8 KiB, 16.3 ms with one row and 8 KiB, 14.7 ms with one row and 16 KiB (an earlier
// session, reading ~35 GB/s, found 8 KiB 1.5-2.5% faster than 4 KiB and 16 KiB no better).
constexpr long kPrefetchBytes = 16384;

// N tokens at once. Each 64-byte pair of weight blocks is loaded once and offset to unsigned
// (w + 128, an XOR of the sign bit); per token one vpdpbusd with the int8 activations, starting
// from the correction -128 * (the block's activation sum) in the block's first lane, gives each
// block's exact dot product spread over its 8 lanes. Every token's lanes are summed in the same
// order whatever N is, so a token's results do not depend on the tokens beside it.
template <int R, int N>
void rows_n(const Q8Matrix& w, const PackedActivations& x, const std::int32_t* corrections,
            std::int64_t b0, std::int64_t r, float* y, std::size_t ldy) {
  const std::int64_t blocks = w.cols_padded / 32;
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const std::int8_t* xb[N];
  const std::int32_t* cb[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b0 + t);
    cb[t] = corrections + (b0 + t) * (x.cols_padded / 64) * 16;
  }
  const std::int8_t* q[R];
  const std::uint16_t* d[R];
  for (int i = 0; i < R; ++i) {
    q[i] = w.q.data() + (r + i) * w.cols_padded;
    d[i] = w.d.data() + (r + i) * blocks;
  }
  __m512 acc[R][N][2];
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < N; ++t) acc[i][t][0] = acc[i][t][1] = _mm512_setzero_ps();
  }
  for (std::int64_t blk = 0; blk < blocks; blk += 2) {
    __m512i wu[R];
    __m512 dv[R];
    for (int i = 0; i < R; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(q[i] + blk * 32 + kPrefetchBytes), _MM_HINT_T0);
      wu[i] = _mm512_xor_si512(_mm512_load_si512(q[i] + blk * 32), bias);
      dv[i] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(d[i][blk])),
                                 _mm256_set1_ps(_cvtsh_ss(d[i][blk + 1])), 1);
    }
    const int parity = static_cast<int>((blk / 2) % 2);
    for (int t = 0; t < N; ++t) {
      const __m512i xv = _mm512_load_si512(xb[t] + blk * 32);
      const __m512i c = _mm512_loadu_si512(cb[t] + blk * 8);
      for (int i = 0; i < R; ++i) {
        const __m512i s = _mm512_dpbusd_epi32(c, wu[i], xv);
        acc[i][t][parity] = _mm512_fmadd_ps(dv[i], _mm512_cvtepi32_ps(s), acc[i][t][parity]);
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int t = 0; t < N; ++t) {
      y[static_cast<std::size_t>(b0 + t) * ldy + static_cast<std::size_t>(r + i)] =
          _mm512_reduce_add_ps(_mm512_add_ps(acc[i][t][0], acc[i][t][1])) *
          x.scales[static_cast<std::size_t>(b0 + t)];
    }
  }
}

// Rows [begin, end) for tokens [b, b + N): one token streams one row at a time (two rows' streams
// at once were 1.4x slower); several tokens take two rows at a time, then the odd one. A row's
// sums are the same either way.
template <int N>
void rows_tokens(const Q8Matrix& w, const PackedActivations& x, const std::int32_t* corrections,
                 std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
  std::int64_t r = begin;
  if constexpr (N > 1) {
    for (; r + 2 <= end; r += 2) rows_n<2, N>(w, x, corrections, b, r, y, ldy);
  }
  for (; r < end; ++r) rows_n<1, N>(w, x, corrections, b, r, y, ldy);
}

void tokens(const Q8Matrix& w, const PackedActivations& x, const std::int32_t* corrections,
            std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
            std::size_t ldy) {
  std::int64_t b = b0;
  for (; b + 4 <= b1; b += 4) rows_tokens<4>(w, x, corrections, b, begin, end, y, ldy);
  switch (b1 - b) {
    case 3:
      rows_tokens<3>(w, x, corrections, b, begin, end, y, ldy);
      break;
    case 2:
      rows_tokens<2>(w, x, corrections, b, begin, end, y, ldy);
      break;
    case 1:
      rows_tokens<1>(w, x, corrections, b, begin, end, y, ldy);
      break;
    default:
      break;
  }
}

}  // namespace

Q8TokensFn q8_tokens_avx512() { return tokens; }

}  // namespace nanochat::kernels
