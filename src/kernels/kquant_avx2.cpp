// Block-quantized heads (kquant.hpp) with AVX2, read in the file's block layout: 32 weights per
// register unpacked to bytes, vpmaddubsw with the int8 activations (pairs stay within int16: q <=
// 63, |x| <= 128), vpmaddwd with each sub-block's scale to exact int32 lanes, summed in fp32 per
// block.
#include <immintrin.h>

#include <cmath>
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

// Q4_K and Q5_K (kFive), tokens [b, b + N): per 64-weight group, 32 bytes of low nibbles
// (sub-block 2g) and high ones (2g + 1); Q5_K's fifth bits of sub-block j are bit j of qh's 32
// bytes, taken from a copy shifted right by two per group.
template <bool kFive, int N>
void k_with_min_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                       std::int64_t b, std::int64_t begin, std::int64_t end, float* y,
                       std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  constexpr std::int64_t kBytes = kFive ? 176 : 144, kQs = kFive ? 48 : 16;
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
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
      const std::uint8_t* p = row + blk * kBytes;
      for (int off = 0; off < (kFive ? 192 : 128) + 64; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + off), _MM_HINT_T0);
      }
      std::uint32_t words[4];
      q4_k_scale_words(p + 4, words);
      const __m256i m32 = _mm256_cvtepu8_epi32(
          _mm_set_epi32(0, 0, static_cast<int>(words[3]), static_cast<int>(words[2])));
      __m256i sum[N];
      for (int t = 0; t < N; ++t) sum[t] = _mm256_setzero_si256();
      __m256i qh = kFive ? load(p + 16) : _mm256_setzero_si256();
      for (int g = 0; g < 4; ++g) {
        const __m256i qv = load(p + kQs + 32 * g);
        __m256i lo = _mm256_and_si256(qv, low4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), low4);
        if (kFive) {
          lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
          hi = _mm256_or_si256(
              hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
          qh = _mm256_srli_epi16(qh, 2);
        }
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

// The 32-weight types, tokens [b, b + N), four blocks (128 weights) per step in two registers
// of two blocks: their 16 nibble bytes in the two 128-bit lanes give the blocks' values 0-15 (low
// nibbles) and 16-31 (high ones), times the activations reordered to match
// (KQuantSums::reordered). Q5's fifth bits: the blocks' first 16 bytes in a register, their qh
// bytes spread by an in-lane shuffle and tested against each value's bit (ggml's bytes-from-bits
// on a word built in general registers held Q5_0 to half of Q4_0's speed). vpmaddubsw of the low
// and the high values summed in int16 (|2 * 2 * 31 * 128| < 2^15), vpmaddwd with ones to each
// block's four int32 lanes; Q4_0 / Q5_0 add -8 / -16 * the block's activation sum
// (KQuantSums::lanes) and each lane is scaled by its block's d; Q4_1 / Q5_1 add m * the activation
// sum, four blocks to a register.
template <KQuantType kType, int N>
void block32_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                    std::int64_t b, std::int64_t begin, std::int64_t end, float* y,
                    std::size_t ldy) {
  constexpr bool kFive = kType == KQuantType::kQ5_0 || kType == KQuantType::kQ5_1;
  constexpr bool kMin = kType == KQuantType::kQ4_1 || kType == KQuantType::kQ5_1;
  constexpr std::int64_t kQh = kMin ? 4 : 2, kQs = kQh + (kFive ? 4 : 0), kBytes = kQs + 16;
  constexpr std::int32_t kOffset = kMin ? 0 : kFive ? 16 : 8;
  const std::int64_t groups = w.cols / 128, blocks = w.cols / 32;
  const __m256i low4 = _mm256_set1_epi8(0x0F), sixteen = _mm256_set1_epi8(16);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i d_index[2] = {_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                              _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3)};
  // Byte shuffles within each 128-bit lane of a register holding two blocks' first 16 bytes:
  // the qh bytes with the fifth bits of values 0-15 and 16-31 (value i: bit i % 8 of byte
  // i / 8), then tested against each value's bit.
  const auto in_lanes = [](auto byte) {
    alignas(32) std::int8_t idx[32];
    for (int i = 0; i < 32; ++i) idx[i] = static_cast<std::int8_t>(byte(i % 16));
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
  };
  const __m256i qh_lo = in_lanes([](int i) { return kQh + i / 8; });
  const __m256i qh_hi = in_lanes([](int i) { return kQh + 2 + i / 8; });
  const __m256i bit = in_lanes([](int i) { return 1 << (i % 8); });
  const auto fifth_bits = [&](__m256i heads, __m256i which) {  // 16 where the bit is set
    const __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(heads, which), bit);
    return _mm256_andnot_si256(_mm256_cmpeq_epi8(set, _mm256_setzero_si256()), sixteen);
  };
  const std::int8_t* xr[N];
  const std::int8_t* xb[N];
  const std::int32_t* x32[N];
  const std::int32_t* lanes[N];
  for (int t = 0; t < N; ++t) {
    xr[t] = sums.reordered(b + t);
    xb[t] = x.token(b + t);
    x32[t] = sums.sums32(b + t);
    lanes[t] = kMin ? nullptr : sums.lanes_at(b + t);
  }
  const auto half_bits = [](const std::uint8_t* q) {
    std::uint16_t h;
    std::memcpy(&h, q, 2);
    return static_cast<int>(h);
  };
  const auto four_halves = [&](const std::uint8_t* q) {  // the fp16 at q in four blocks
    __m128i h = _mm_cvtsi32_si128(half_bits(q));
    h = _mm_insert_epi16(h, half_bits(q + kBytes), 1);
    h = _mm_insert_epi16(h, half_bits(q + 2 * kBytes), 2);
    h = _mm_insert_epi16(h, half_bits(q + 3 * kBytes), 3);
    return _mm_cvtph_ps(h);
  };
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m256 acc[N];
    __m128 acc_m[N];
    for (int t = 0; t < N; ++t) {
      acc[t] = _mm256_setzero_ps();
      acc_m[t] = _mm_setzero_ps();
    }
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::uint8_t* p = row + g * 4 * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 64), _MM_HINT_T0);
      const __m256 d4 = _mm256_castps128_ps256(four_halves(p));
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t* q = p + 2 * half * kBytes;
        const __m256i qv = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q + kBytes + kQs),
                                               reinterpret_cast<const __m128i*>(q + kQs));
        __m256i lo = _mm256_and_si256(qv, low4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), low4);
        if (kFive) {
          const __m256i heads = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q + kBytes),
                                                    reinterpret_cast<const __m128i*>(q));
          lo = _mm256_or_si256(lo, fifth_bits(heads, qh_lo));
          hi = _mm256_or_si256(hi, fifth_bits(heads, qh_hi));
        }
        const __m256 d = _mm256_permutevar8x32_ps(d4, d_index[half]);
        for (int t = 0; t < N; ++t) {
          const std::int8_t* xv = xr[t] + g * 128 + 32 * half;
          __m256i s = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, load(xv)),
                                                         _mm256_maddubs_epi16(hi, load(xv + 64))),
                                        ones);
          if (!kMin) s = _mm256_add_epi32(s, load(lanes[t] + g * 16 + 8 * half));
          acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[t]);
        }
      }
      if (kMin) {
        const __m128 m = four_halves(p + 2);
        for (int t = 0; t < N; ++t) {
          const __m128i sx = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x32[t] + 4 * g));
          acc_m[t] = _mm_fmadd_ps(m, _mm_cvtepi32_ps(sx), acc_m[t]);
        }
      }
    }
    float tail[N] = {};
    for (std::int64_t blk = groups * 4; blk < blocks; ++blk) {  // past the last whole group
      const std::uint8_t* p = row + blk * kBytes;
      const float d = half_at(p);
      for (int t = 0; t < N; ++t) {
        const std::int32_t a = block32_dot<kFive>(p + kQh, p + kQs, xb[t] + blk * 32);
        // Explicit fused steps: contraction left to the compiler may differ between the
        // instantiations for 1 and for N tokens (a token's bits would depend on its batch).
        if (kMin) {
          tail[t] = std::fma(half_at(p + 2), static_cast<float>(x32[t][blk]),
                             std::fma(d, static_cast<float>(a), tail[t]));
        } else {
          tail[t] = std::fma(d, static_cast<float>(a - kOffset * x32[t][blk]), tail[t]);
        }
      }
    }
    for (int t = 0; t < N; ++t) {
      __m128 s = _mm_add_ps(acc_m[t], _mm_movehl_ps(acc_m[t], acc_m[t]));
      s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          (hsum(acc[t]) + _mm_cvtss_f32(s) + tail[t]) * x.scales[static_cast<std::size_t>(b + t)];
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

template <bool kFive, int N>
void k_with_min_fn(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                   std::int64_t b0, std::int64_t /*b1*/, std::int64_t begin, std::int64_t end,
                   float* y, std::size_t ldy) {
  k_with_min_tokens<kFive, N>(w, x, sums, b0, begin, end, y, ldy);
}

template <KQuantType kType, int N>
void block32_fn(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                std::int64_t b0, std::int64_t /*b1*/, std::int64_t begin, std::int64_t end,
                float* y, std::size_t ldy) {
  block32_tokens<kType, N>(w, x, sums, b0, begin, end, y, ldy);
}

}  // namespace

KQuantFn kquant_avx2(KQuantType type) {
  using T = KQuantType;
  switch (type) {
    case T::kQ4_0:
      return tokens<block32_fn<T::kQ4_0, 2>, block32_fn<T::kQ4_0, 1>>;
    case T::kQ4_1:
      return tokens<block32_fn<T::kQ4_1, 2>, block32_fn<T::kQ4_1, 1>>;
    case T::kQ5_0:
      return tokens<block32_fn<T::kQ5_0, 2>, block32_fn<T::kQ5_0, 1>>;
    case T::kQ5_1:
      return tokens<block32_fn<T::kQ5_1, 2>, block32_fn<T::kQ5_1, 1>>;
    case T::kQ4_K:
      return tokens<k_with_min_fn<false, 2>, k_with_min_fn<false, 1>>;
    case T::kQ5_K:
      return tokens<k_with_min_fn<true, 2>, k_with_min_fn<true, 1>>;
    case T::kQ6_K:
      break;
  }
  return tokens<q6_k_fn<2>, q6_k_fn<1>>;
}

}  // namespace nanochat::kernels
