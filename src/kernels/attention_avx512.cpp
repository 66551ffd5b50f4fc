// AVX-512 attention scores (compiled with AVX-512 F/BW/VL/DQ flags; attention_row only calls it on
// CPUs that have them). One query against sixteen keys at a time: each key's sixteen-lane
// products are summed by one transposing reduction of all sixteen accumulators (about three
// instructions per key), where a reduction per key takes about eight. Inference and training
// both reach this through attention_row, so they stay bit for bit equal.
#include <immintrin.h>

// GCC 12 reports its own AVX-512 shuffle/unpack helpers as reading an uninitialised value (the
// false positive gemm_avx512.cpp notes too); the intrinsics are correct.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "vec_internal.hpp"

namespace nanochat::kernels::detail {
namespace {

template <int N, typename F>
inline __attribute__((always_inline)) void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }
  (std::make_integer_sequence<int, N>{});
}

// Lane k of the result = the sum of v[k]'s sixteen lanes.
inline __attribute__((always_inline)) __m512 sum16(const __m512 (&v)[16]) {
  __m512 t[8];  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] for pairs (a, b)
  unroll<8>([&](auto i) {
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  });
  __m512 u[4];  // per 128-bit lane: four keys' partial sums, in order
  unroll<4>([&](auto i) {
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

}  // namespace

void attention_scores_avx512(const float* q, const float* keys, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float scale, float* p) {
  const std::int64_t full = d / 16;
  const auto tail = static_cast<__mmask16>((1u << (d % 16)) - 1u);
  const __m512 vscale = _mm512_set1_ps(scale);
  for (std::int64_t j0 = 0; j0 < len; j0 += 16) {
    const int n = static_cast<int>(std::min<std::int64_t>(16, len - j0));
    __m512 acc[16];
    unroll<16>([&](auto k) { acc[k] = _mm512_setzero_ps(); });
    const float* kb = keys + j0 * stride;
    for (std::int64_t c = 0; c < full; ++c) {
      const __m512 qv = _mm512_loadu_ps(q + c * 16);
      unroll<16>([&](auto k) {
        if (k < n) acc[k] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kb + k * stride + c * 16), acc[k]);
      });
    }
    if (tail != 0) {
      const __m512 qv = _mm512_maskz_loadu_ps(tail, q + full * 16);
      unroll<16>([&](auto k) {
        if (k < n) {
          acc[k] =
              _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, kb + k * stride + full * 16), acc[k]);
        }
      });
    }
    const __m512 s = _mm512_mul_ps(sum16(acc), vscale);
    _mm512_mask_storeu_ps(p + j0, static_cast<__mmask16>((1u << n) - 1u), s);
  }
}

namespace {

// out = sum_j p[j] v_j with the d / 16 accumulators in registers; each lane is summed in key order
// with one fused multiply-add per key, as the vectorized loop over memory it replaces did.
template <int N>
void attention_values_n(const float* p, const float* values, std::int64_t stride, std::int64_t len,
                        float* out) {
  __m512 acc[N];
  unroll<N>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
  for (std::int64_t j = 0; j < len; ++j) {
    const __m512 w = _mm512_set1_ps(p[j]);
    const float* v = values + j * stride;
    unroll<N>([&](auto i) { acc[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + i * 16), acc[i]); });
  }
  unroll<N>([&](auto i) { _mm512_storeu_ps(out + i * 16, acc[i]); });
}

}  // namespace

bool attention_values_avx512(const float* p, const float* values, std::int64_t stride,
                             std::int64_t len, std::int64_t d, float* out) {
  switch (d) {
    case 16:
      attention_values_n<1>(p, values, stride, len, out);
      return true;
    case 32:
      attention_values_n<2>(p, values, stride, len, out);
      return true;
    case 48:
      attention_values_n<3>(p, values, stride, len, out);
      return true;
    case 64:
      attention_values_n<4>(p, values, stride, len, out);
      return true;
    case 80:
      attention_values_n<5>(p, values, stride, len, out);
      return true;
    case 96:
      attention_values_n<6>(p, values, stride, len, out);
      return true;
    case 112:
      attention_values_n<7>(p, values, stride, len, out);
      return true;
    case 128:
      attention_values_n<8>(p, values, stride, len, out);
      return true;
    default:
      return false;
  }
}

}  // namespace nanochat::kernels::detail
