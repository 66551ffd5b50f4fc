// AVX-512 attention (compiled with AVX-512 F/BW/VL/DQ flags; attention_row and attention_rows
// only call it on CPUs that have them). Scores: one query against sixteen keys at a time; each
// key's sixteen-lane products are summed by one transposing reduction of all sixteen accumulators
// (about three instructions per key), where a reduction per key takes about eight. Weighted sums
// of values: the head's lanes in registers, several queries per pass over the value rows.
// Inference (attention_row) and training (attention_rows) give the same bits for every query.
#include <immintrin.h>

// GCC 12 reports its own AVX-512 shuffle/unpack helpers as reading an uninitialised value (the
// false positive gemm_avx512.cpp notes too); the intrinsics are correct.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "static_for.hpp"
#include "vec_internal.hpp"

namespace nanochat::kernels::detail {
namespace {

// Lane k of the result = the sum of v[k]'s sixteen lanes.
inline __attribute__((always_inline)) __m512 sum16(const __m512 (&v)[16]) {
  __m512 t[8];  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] for pairs (a, b)
  static_for<8>([&](auto i) {
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  });
  __m512 u[4];  // per 128-bit lane: four keys' partial sums, in order
  static_for<4>([&](auto i) {
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  });
  // Across the 128-bit lanes: [u0 L0+L1, u0 L2+L3, u1 L0+L1, u1 L2+L3], then whole sums.
  const __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Calls f(std::integral_constant<int, d / 16>{}) when d is a multiple of 16 up to 128 (the head
// sizes whose accumulators fit in registers); false, and nothing called, otherwise.
template <typename F>
bool with_chunks(std::int64_t d, F&& f) {
  if (d <= 0 || d > 128 || d % 16 != 0) return false;
  static_for<8>([&](auto i) {
    if (d == 16 * (i + 1)) f(std::integral_constant<int, i + 1>{});
  });
  return true;
}

}  // namespace

namespace {

// Scores of sixteen keys from row `base` (key k at row base + min(k, last): rows past the end are
// never read), stored to p[base + k] for the lanes in `store`. Each key's sixteen lane partial
// sums are chains of fused multiply-adds over the head's 16-wide chunks in order, then sum16.
// Chunks = d / 16 keeps the query in registers and walks one key row at a time; Chunks = 0 takes
// any d (a masked last chunk), loading the query from memory.
template <int Chunks>
inline __attribute__((always_inline)) void score_block(const float* q, std::int64_t d,
                                                       const float* keys, std::int64_t stride,
                                                       std::int64_t base, int last, __mmask16 store,
                                                       float scale, float* p) {
  __m512 acc[16];
  const float* kb = keys + base * stride;
  if constexpr (Chunks > 0) {
    __m512 qv[Chunks];
    static_for<Chunks>([&](auto c) { qv[c] = _mm512_loadu_ps(q + c * 16); });
    static_for<16>([&](auto k) {
      const float* row = kb + std::min<std::int64_t>(k, last) * stride;
      __m512 a = _mm512_setzero_ps();
      static_for<Chunks>(
          [&](auto c) { a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(row + c * 16), a); });
      acc[k] = a;
    });
  } else {
    const std::int64_t full = d / 16;
    const auto tail = static_cast<__mmask16>((1u << (d % 16)) - 1u);
    static_for<16>([&](auto k) {
      const float* row = kb + std::min<std::int64_t>(k, last) * stride;
      __m512 a = _mm512_setzero_ps();
      for (std::int64_t c = 0; c < full; ++c) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(q + c * 16), _mm512_loadu_ps(row + c * 16), a);
      }
      if (tail != 0) {
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + full * 16),
                            _mm512_maskz_loadu_ps(tail, row + full * 16), a);
      }
      acc[k] = a;
    });
  }
  _mm512_mask_storeu_ps(p + base, store, _mm512_mul_ps(sum16(acc), _mm512_set1_ps(scale)));
}

template <int Chunks>
void scores_range(const float* q, const float* keys, std::int64_t stride, std::int64_t begin,
                  std::int64_t end, std::int64_t d, float scale, float* p) {
  for (std::int64_t j0 = begin; j0 < end; j0 += 16) {
    if (j0 + 16 <= end) {
      score_block<Chunks>(q, d, keys, stride, j0, 15, 0xFFFF, scale, p);
    } else if (end >= 16) {  // the last sixteen keys, stored from j0 on
      const auto store = static_cast<__mmask16>(0xFFFFu << (j0 - (end - 16)));
      score_block<Chunks>(q, d, keys, stride, end - 16, 15, store, scale, p);
    } else {  // fewer than sixteen keys in all
      const auto store = static_cast<__mmask16>(((1u << (end - j0)) - 1u) << j0);
      score_block<Chunks>(q, d, keys, stride, 0, static_cast<int>(end - 1), store, scale, p);
    }
  }
}

template <int Chunks>
void scores_block_queries(const float* q, std::int64_t q_stride, std::int64_t n, const float* keys,
                          std::int64_t stride, std::int64_t j0, std::int64_t d, float scale,
                          float* p, std::int64_t p_stride) {
  for (std::int64_t i = 0; i < n; ++i) {
    score_block<Chunks>(q + i * q_stride, d, keys, stride, j0, 15, 0xFFFF, scale, p + i * p_stride);
  }
}

}  // namespace

void attention_scores_block_avx512(const float* q, std::int64_t q_stride, std::int64_t n,
                                   const float* keys, std::int64_t stride, std::int64_t j0,
                                   std::int64_t d, float scale, float* p, std::int64_t p_stride) {
  if (!with_chunks(d, [&](auto chunks) {
        scores_block_queries<chunks>(q, q_stride, n, keys, stride, j0, d, scale, p, p_stride);
      })) {
    scores_block_queries<0>(q, q_stride, n, keys, stride, j0, d, scale, p, p_stride);
  }
}

void attention_scores_avx512(const float* q, const float* keys, std::int64_t stride,
                             std::int64_t begin, std::int64_t end, std::int64_t d, float scale,
                             float* p) {
  if (!with_chunks(d, [&](auto chunks) {
        scores_range<chunks>(q, keys, stride, begin, end, d, scale, p);
      })) {
    scores_range<0>(q, keys, stride, begin, end, d, scale, p);
  }
}

namespace {

// out = sum_j p[j] v_j with the d / 16 accumulators in registers; each lane is summed in key order
// with one fused multiply-add per key, as the vectorized loop over memory it replaces did.
template <int N>
void attention_values_n(const float* p, const float* values, std::int64_t stride, std::int64_t len,
                        float* out) {
  __m512 acc[N];
  static_for<N>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
  for (std::int64_t j = 0; j < len; ++j) {
    const __m512 w = _mm512_set1_ps(p[j]);
    const float* v = values + j * stride;
    static_for<N>(
        [&](auto i) { acc[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + i * 16), acc[i]); });
  }
  static_for<N>([&](auto i) { _mm512_storeu_ps(out + i * 16, acc[i]); });
}

// Q consecutive queries of one head at once, query i's probabilities in row p + i * p_stride and
// len0 + i of them: each value row is loaded once for all Q. Every query's lanes get the same
// fused multiply-adds in the same key order as attention_values_n<N> would give it alone.
template <int N, int Q>
void attention_values_rows_n(const float* p, std::int64_t p_stride, std::int64_t len0,
                             const float* values, std::int64_t stride, float* out,
                             std::int64_t out_stride) {
  __m512 acc[Q][N];
  static_for<Q>([&](auto i) { static_for<N>([&](auto k) { acc[i][k] = _mm512_setzero_ps(); }); });
  for (std::int64_t j = 0; j < len0; ++j) {
    const float* v = values + j * stride;
    __m512 vk[N];
    static_for<N>([&](auto k) { vk[k] = _mm512_loadu_ps(v + k * 16); });
    static_for<Q>([&](auto i) {
      const __m512 w = _mm512_set1_ps(p[i * p_stride + j]);
      static_for<N>([&](auto k) { acc[i][k] = _mm512_fmadd_ps(w, vk[k], acc[i][k]); });
    });
  }
  // The later queries' last keys, in order.
  static_for<Q>([&](auto i) {
    for (std::int64_t j = len0; j < len0 + i; ++j) {
      const __m512 w = _mm512_set1_ps(p[i * p_stride + j]);
      const float* v = values + j * stride;
      static_for<N>(
          [&](auto k) { acc[i][k] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + k * 16), acc[i][k]); });
    }
    static_for<N>([&](auto k) { _mm512_storeu_ps(out + i * out_stride + k * 16, acc[i][k]); });
  });
}

template <int N>
void attention_values_rows_d(const float* p, std::int64_t p_stride, std::int64_t n,
                             std::int64_t start, const float* values, std::int64_t stride,
                             float* out, std::int64_t out_stride) {
  // As many queries as keep the accumulators and one value row in registers.
  constexpr int kQ = N <= 4 ? 4 : N <= 6 ? 3 : 2;
  std::int64_t i = 0;
  for (; i + kQ <= n; i += kQ) {
    attention_values_rows_n<N, kQ>(p + i * p_stride, p_stride, start + i + 1, values, stride,
                                   out + i * out_stride, out_stride);
  }
  for (; i < n; ++i) {
    attention_values_n<N>(p + i * p_stride, values, stride, start + i + 1, out + i * out_stride);
  }
}

}  // namespace

bool attention_values_rows_avx512(const float* p, std::int64_t p_stride, std::int64_t n,
                                  std::int64_t start, const float* values, std::int64_t stride,
                                  std::int64_t d, float* out, std::int64_t out_stride) {
  return with_chunks(d, [&](auto chunks) {
    attention_values_rows_d<chunks>(p, p_stride, n, start, values, stride, out, out_stride);
  });
}

bool attention_values_avx512(const float* p, const float* values, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float* out) {
  return with_chunks(d,
                     [&](auto chunks) { attention_values_n<chunks>(p, values, stride, len, out); });
}

}  // namespace nanochat::kernels::detail
