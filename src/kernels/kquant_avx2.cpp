// K-quant heads with AVX2, read in the file's block layout: 32 weights per register unpacked to
// bytes, vpmaddubsw with the int8 activations (pairs stay within int16: q <= 63, |x| <= 128),
// vpmaddwd with each sub-block's scale to exact int32 lanes, summed in fp32 per block.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kquant_internal.hpp"
#include "nanochat/kernels/kquant.hpp"

namespace nanochat::kernels {
namespace {

constexpr long kPrefetchBytes = 8192;

inline float half_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Q6_K, tokens [b, b + N). Per 128-weight half: ql bytes 0-31 hold weights 0-31 (low nibbles)
// and 64-95 (high), bytes 32-63 weights 32-63 and 96-127; qh byte l holds bits 4-5 of weights
// l, l + 32, l + 64, l + 96 in its bit pairs. The -32 offset is taken off once per block:
// 32 * sum_j sc[j] * (the sub-block's activation sum).
template <int N>
void q6_k_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                 std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  // Byte shuffles of the half's 8 int16 scales (in both 128-bit lanes) giving register k's
  // 16 lanes: sub-block 2k's scale in the low lane, 2k + 1's in the high one.
  __m256i scale_shuffle[4];
  for (int k = 0; k < 4; ++k) {
    alignas(32) std::int8_t s[32];
    for (int i = 0; i < 32; ++i) s[i] = static_cast<std::int8_t>(4 * k + (i / 16) * 2 + i % 2);
    scale_shuffle[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
  }
  const std::int8_t* xb[N];
  const std::int16_t* x16[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b + t);
    x16[t] = sums.sums16(b + t);
  }
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m256 acc[N];
    for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::uint8_t* p = row + blk * 210;
      for (int off = 0; off < 256; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + off), _MM_HINT_T0);
      }
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
      __m256i sum[N];
      for (int t = 0; t < N; ++t) {
        // The offset: 32 * sum_j sc[j] * x16[j], subtracted from the block's lanes.
        sum[t] = _mm256_sub_epi32(
            _mm256_setzero_si256(),
            _mm256_slli_epi32(_mm256_madd_epi16(sc16, load(x16[t] + blk * 16)), 5));
      }
      for (int half = 0; half < 2; ++half) {
        const __m256i ql0 = load(p + 64 * half), ql1 = load(p + 64 * half + 32);
        const __m256i qh = load(p + 128 + 32 * half);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
            _mm256_or_si256(_mm256_and_si256(ql1, low4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                            _mm256_and_si256(qh, bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
        };
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 192 + 8 * half))));
        for (int k = 0; k < 4; ++k) {
          const __m256i s = _mm256_shuffle_epi8(scales, scale_shuffle[k]);
          for (int t = 0; t < N; ++t) {
            const __m256i prod =
                _mm256_maddubs_epi16(q[k], load(xb[t] + blk * 256 + half * 128 + 32 * k));
            sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(prod, s));
          }
        }
      }
      const __m256 d = _mm256_set1_ps(half_at(p + 208));
      for (int t = 0; t < N; ++t) acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum[t]), acc[t]);
    }
    for (int t = 0; t < N; ++t) {
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          hsum(acc[t]) * x.scales[static_cast<std::size_t>(b + t)];
    }
  }
}

// Q4_K, tokens [b, b + N): per 64-weight group, 32 bytes of low nibbles (sub-block 2g) and high
// ones (2g + 1).
template <int N>
void q4_k_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                 std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const std::int8_t* xb[N];
  const std::int32_t* x32[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b + t);
    x32[t] = sums.sums32(b + t);
  }
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m256 acc[N], acc_min[N];
    for (int t = 0; t < N; ++t) acc[t] = acc_min[t] = _mm256_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::uint8_t* p = row + blk * 144;
      for (int off = 0; off < 192; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + off), _MM_HINT_T0);
      }
      std::uint32_t words[4];
      q4_k_scale_words(p + 4, words);
      const __m256i m32 = _mm256_cvtepu8_epi32(
          _mm_set_epi32(0, 0, static_cast<int>(words[3]), static_cast<int>(words[2])));
      __m256i sum[N];
      for (int t = 0; t < N; ++t) sum[t] = _mm256_setzero_si256();
      for (int g = 0; g < 4; ++g) {
        const __m256i qv = load(p + 16 + 32 * g);
        const __m256i lo = _mm256_and_si256(qv, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), low4);
        // Sub-blocks 2g and 2g + 1: bytes 2g % 4 and 2g % 4 + 1 of word g / 2.
        const std::uint32_t word = words[g / 2] >> (16 * (g % 2));
        const __m256i s_lo = _mm256_set1_epi16(static_cast<short>(word & 0xff)),
                      s_hi = _mm256_set1_epi16(static_cast<short>((word >> 8) & 0xff));
        for (int t = 0; t < N; ++t) {
          const std::int8_t* xv = xb[t] + blk * 256 + 64 * g;
          sum[t] = _mm256_add_epi32(
              sum[t],
              _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, load(xv)), s_lo),
                               _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load(xv + 32)), s_hi)));
        }
      }
      const __m256 d = _mm256_set1_ps(half_at(p)), dmin = _mm256_set1_ps(half_at(p + 2));
      for (int t = 0; t < N; ++t) {
        acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum[t]), acc[t]);
        const __m256i m = _mm256_mullo_epi32(m32, load(x32[t] + blk * 8));
        acc_min[t] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(m), acc_min[t]);
      }
    }
    for (int t = 0; t < N; ++t) {
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          (hsum(acc[t]) - hsum(acc_min[t])) * x.scales[static_cast<std::size_t>(b + t)];
    }
  }
}

// Tokens two at a time (sixteen registers hold no more), then the odd one.
template <KQuantFn Two, KQuantFn One>
void tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
            std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
            std::size_t ldy) {
  std::int64_t b = b0;
  for (; b + 2 <= b1; b += 2) Two(w, x, sums, b, b + 2, begin, end, y, ldy);
  if (b < b1) One(w, x, sums, b, b + 1, begin, end, y, ldy);
}

template <int N>
void q6_k_fn(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
             std::int64_t b0, std::int64_t /*b1*/, std::int64_t begin, std::int64_t end, float* y,
             std::size_t ldy) {
  q6_k_tokens<N>(w, x, sums, b0, begin, end, y, ldy);
}

template <int N>
void q4_k_fn(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
             std::int64_t b0, std::int64_t /*b1*/, std::int64_t begin, std::int64_t end, float* y,
             std::size_t ldy) {
  q4_k_tokens<N>(w, x, sums, b0, begin, end, y, ldy);
}

}  // namespace

KQuantFn kquant_avx2(KQuantType type) {
  return type == KQuantType::kQ4_K ? tokens<q4_k_fn<2>, q4_k_fn<1>>
                                   : tokens<q6_k_fn<2>, q6_k_fn<1>>;
}

}  // namespace nanochat::kernels
