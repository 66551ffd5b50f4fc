// Block-quantized heads (kquant.hpp) with AVX-512 VNNI, read in the file's block layout. 64
// weights per register: their 4-bit (and for Q6_K 2-bit, for Q5 1-bit high) fields unpacked to
// bytes, one vpdpbusd (unsigned weights
// times signed int8 activations) per token sums them four at a time, and a per-lane vpmulld
// applies each sub-block's scale; every block's int32 lanes are exact and summed in fp32.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kquant_internal.hpp"
#include "nanochat/kernels/kquant.hpp"

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace nanochat::kernels {
namespace {

// Prefetch distance along a row's blocks, as in the Q8_0 head kernel.
constexpr long kPrefetchBytes = 8192;

inline float half_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Q6_K, tokens [b, b + N). Per 128-weight half of a block: ql's 64 bytes hold weights 0-63 in
// their low nibbles and 64-127 in their high ones; qh's 32 bytes hold bits 4-5 of weights l,
// l + 32, l + 64 and l + 96 in their bit pairs 0-1, 2-3, 4-5 and 6-7. The activation lanes start
// at -32 * (the sub-block's activation sum) (KQuantSums::lanes), which turns q into q - 32.
template <int N>
void q6_k_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                 std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  // Per 16-bit lane: the first 32 bytes shift by the first count, the next 32 by the second.
  const __m512i shift_first = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shift_second = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  __m512i scale_index[4];
  for (int k = 0; k < 4; ++k) {
    alignas(64) std::int32_t idx[16];
    for (int l = 0; l < 16; ++l) idx[l] = 4 * k + l / 4;
    scale_index[k] = _mm512_load_si512(idx);
  }
  const std::int8_t* xb[N];
  const std::int32_t* lanes[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b + t);
    lanes[t] = sums.lanes_at(b + t);
  }
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m512 acc[N];
    for (int t = 0; t < N; ++t) acc[t] = _mm512_setzero_ps();
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::uint8_t* p = row + blk * 210;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 128), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 192), _MM_HINT_T0);
      const __m512i sc =
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
      const __m512 d = _mm512_set1_ps(half_at(p + 208));
      __m512i sum[N];
      for (int t = 0; t < N; ++t) sum[t] = _mm512_setzero_si512();
      for (int half = 0; half < 2; ++half) {
        const __m512i ql = _mm512_loadu_si512(p + 64 * half);
        const __m512i qh = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * half)));
        const __m512i q0 =
            _mm512_or_si512(_mm512_and_si512(ql, low4),
                            _mm512_and_si512(_mm512_sllv_epi16(qh, shift_first), bits45));
        const __m512i q1 =
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                            _mm512_and_si512(_mm512_srlv_epi16(qh, shift_second), bits45));
        const __m512i s0 = _mm512_permutexvar_epi32(scale_index[2 * half], sc);
        const __m512i s1 = _mm512_permutexvar_epi32(scale_index[2 * half + 1], sc);
        for (int t = 0; t < N; ++t) {
          const std::int8_t* xv = xb[t] + blk * 256 + half * 128;
          const std::int32_t* c = lanes[t] + (blk * 4 + half * 2) * 16;
          const __m512i p0 = _mm512_dpbusd_epi32(_mm512_loadu_si512(c), q0, _mm512_loadu_si512(xv));
          const __m512i p1 =
              _mm512_dpbusd_epi32(_mm512_loadu_si512(c + 16), q1, _mm512_loadu_si512(xv + 64));
          sum[t] = _mm512_add_epi32(
              sum[t], _mm512_add_epi32(_mm512_mullo_epi32(p0, s0), _mm512_mullo_epi32(p1, s1)));
        }
      }
      for (int t = 0; t < N; ++t) acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum[t]), acc[t]);
    }
    for (int t = 0; t < N; ++t) {
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          _mm512_reduce_add_ps(acc[t]) * x.scales[static_cast<std::size_t>(b + t)];
    }
  }
}

// Q4_K and Q5_K (kFive), tokens [b, b + N). A 64-byte load holds two 64-weight groups of 32
// bytes; the low nibbles are sub-blocks 0 and 2 of the pair (weights 0-31 and 64-95), the high
// ones 1 and 3. Q5_K's fifth bit of value l of sub-block j is bit j of qh[l]: qh's 32 bytes in
// both halves of a register, each 16-bit lane shifted right by that half's sub-block.
template <bool kFive, int N>
void k_with_min_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                       std::int64_t b, std::int64_t begin, std::int64_t end, float* y,
                       std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  constexpr std::int64_t kBytes = kFive ? 176 : 144, kQs = kFive ? 48 : 16;
  const __m512i low4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
  const __m512i shift_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  const __m512i shift_hi = _mm512_inserti64x4(_mm512_set1_epi16(1), _mm256_set1_epi16(3), 1);
  // Scale lanes for the four registers of a block: sub-blocks (0, 2), (1, 3), (4, 6), (5, 7).
  __m512i scale_index[4];
  for (int k = 0; k < 4; ++k) {
    alignas(64) std::int32_t idx[16];
    const int first = (k / 2) * 4 + k % 2;
    for (int l = 0; l < 16; ++l) idx[l] = first + (l / 8) * 2;
    scale_index[k] = _mm512_load_si512(idx);
  }
  const std::int8_t* xb[N];
  const std::int32_t* x32[N];
  for (int t = 0; t < N; ++t) {
    xb[t] = x.token(b + t);
    x32[t] = sums.sums32(b + t);
  }
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m512 acc[N];
    __m256 acc_min[N];
    for (int t = 0; t < N; ++t) {
      acc[t] = _mm512_setzero_ps();
      acc_min[t] = _mm256_setzero_ps();
    }
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::uint8_t* p = row + blk * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 128), _MM_HINT_T0);
      std::uint32_t words[4];
      q4_k_scale_words(p + 4, words);
      const __m512i sm = _mm512_cvtepu8_epi32(
          _mm_set_epi32(static_cast<int>(words[3]), static_cast<int>(words[2]),
                        static_cast<int>(words[1]), static_cast<int>(words[0])));
      const __m256i mins = _mm512_extracti64x4_epi64(sm, 1);
      const __m512 d = _mm512_set1_ps(half_at(p));
      const __m256 dmin = _mm256_set1_ps(half_at(p + 2));
      __m512i sum[N];
      for (int t = 0; t < N; ++t) sum[t] = _mm512_setzero_si512();
      for (int pair = 0; pair < 2; ++pair) {
        const __m512i qv = _mm512_loadu_si512(p + kQs + 64 * pair);
        __m512i lo = _mm512_and_si512(qv, low4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(qv, 4), low4);
        if (kFive) {  // sub-blocks 4 * pair + (0, 2) in lo, + (1, 3) in hi
          const __m512i qh = _mm512_srli_epi16(
              _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16))),
              4 * pair);
          lo = _mm512_or_si512(
              lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift_lo), one), 4));
          hi = _mm512_or_si512(
              hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift_hi), one), 4));
        }
        const __m512i s_lo = _mm512_permutexvar_epi32(scale_index[2 * pair], sm);
        const __m512i s_hi = _mm512_permutexvar_epi32(scale_index[2 * pair + 1], sm);
        for (int t = 0; t < N; ++t) {
          const std::int8_t* xv = xb[t] + blk * 256 + pair * 128;
          const auto load = [](const std::int8_t* a) {
            return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
          };
          const __m512i x_lo =
              _mm512_inserti64x4(_mm512_castsi256_si512(load(xv)), load(xv + 64), 1);
          const __m512i x_hi =
              _mm512_inserti64x4(_mm512_castsi256_si512(load(xv + 32)), load(xv + 96), 1);
          const __m512i zero = _mm512_setzero_si512();
          sum[t] = _mm512_add_epi32(
              sum[t],
              _mm512_add_epi32(_mm512_mullo_epi32(_mm512_dpbusd_epi32(zero, lo, x_lo), s_lo),
                               _mm512_mullo_epi32(_mm512_dpbusd_epi32(zero, hi, x_hi), s_hi)));
        }
      }
      for (int t = 0; t < N; ++t) {
        acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum[t]), acc[t]);
        const __m256i m = _mm256_mullo_epi32(
            mins, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x32[t] + blk * 8)));
        acc_min[t] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(m), acc_min[t]);
      }
    }
    for (int t = 0; t < N; ++t) {
      __m128 s =
          _mm_add_ps(_mm256_castps256_ps128(acc_min[t]), _mm256_extractf128_ps(acc_min[t], 1));
      s = _mm_add_ps(s, _mm_movehl_ps(s, s));
      s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          (_mm512_reduce_add_ps(acc[t]) - _mm_cvtss_f32(s)) *
          x.scales[static_cast<std::size_t>(b + t)];
    }
  }
}

// The 32-weight types, tokens [b, b + N), four blocks (128 weights) per step: their 16 nibble
// bytes in the four 128-bit lanes of a register give the blocks' values 0-15 (low nibbles) and
// 16-31 (high ones), times the activations reordered to match (KQuantSums::reordered). The
// blocks' first 16 bytes in another register give d, m and qh by in-lane byte shuffles (no
// scalar loads: gathering them with vpinsrw / vpinsrd and a k-mask from a general register held
// Q5_0 and Q5_1 at 17 GB/s); Q5's fifth bits become byte masks (vptestmb) that add 16. Each
// block's int32 sum lands in its lane's four int32s; Q4_0 / Q5_0 start them at -8 / -16 * the
// block's activation sum (KQuantSums::lanes), and each lane is scaled by its block's d; Q4_1 /
// Q5_1 add m * the activation sum (in the block's first lane of KQuantSums::lanes).
template <KQuantType kType, int N>
void block32_tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                    std::int64_t b, std::int64_t begin, std::int64_t end, float* y,
                    std::size_t ldy) {
  constexpr bool kFive = kType == KQuantType::kQ5_0 || kType == KQuantType::kQ5_1;
  constexpr bool kMin = kType == KQuantType::kQ4_1 || kType == KQuantType::kQ5_1;
  constexpr std::int64_t kQh = kMin ? 4 : 2, kQs = kQh + (kFive ? 4 : 0), kBytes = kQs + 16;
  constexpr std::int32_t kOffset = kMin ? 0 : kFive ? 16 : 8;
  const std::int64_t groups = w.cols / 128, blocks = w.cols / 32;
  const __m512i low4 = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
  // Byte shuffles within each 128-bit lane of the register holding each block's first 16 bytes:
  // d (and m) into every 16-bit word; the qh bytes holding the fifth bits of values 0-15 and
  // 16-31 (value i: bit i % 8 of byte i / 8), tested against each value's bit.
  const auto in_lanes = [](auto byte) {
    alignas(64) std::int8_t idx[64];
    for (int i = 0; i < 64; ++i) idx[i] = static_cast<std::int8_t>(byte(i % 16));
    return _mm512_load_si512(idx);
  };
  const __m512i d_bytes = in_lanes([](int i) { return i % 2; });
  const __m512i m_bytes = in_lanes([](int i) { return 2 + i % 2; });
  const __m512i qh_lo = in_lanes([](int i) { return kQh + i / 8; });
  const __m512i qh_hi = in_lanes([](int i) { return kQh + 2 + i / 8; });
  const __m512i bit = in_lanes([](int i) { return 1 << (i % 8); });
  // Four fp16 (one per lane, in every word) -> 16 floats, each block's in its lane's four.
  const auto halves_to_lanes = [](__m512i words) {
    return _mm512_cvtph_ps(_mm512_cvtepi64_epi32(words));
  };
  const std::int8_t* xr[N];
  const std::int8_t* xb[N];
  const std::int32_t* x32[N];
  const std::int32_t* lanes[N];
  for (int t = 0; t < N; ++t) {
    xr[t] = sums.reordered(b + t);
    xb[t] = x.token(b + t);
    x32[t] = sums.sums32(b + t);
    lanes[t] = sums.lanes_at(b + t);
  }
  const auto four = [](const std::uint8_t* q) {  // 16 bytes at q in each of four blocks
    const auto at = [](const std::uint8_t* a) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    };
    __m512i v = _mm512_castsi128_si512(at(q));
    v = _mm512_inserti32x4(v, at(q + kBytes), 1);
    v = _mm512_inserti32x4(v, at(q + 2 * kBytes), 2);
    return _mm512_inserti32x4(v, at(q + 3 * kBytes), 3);
  };
  for (std::int64_t r = begin; r < end; ++r) {
    const std::uint8_t* row = w.data.data() + r * w.row_bytes;
    __m512 acc[N];
    for (int t = 0; t < N; ++t) acc[t] = _mm512_setzero_ps();
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::uint8_t* p = row + g * 4 * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes + 64), _MM_HINT_T0);
      const __m512i qv = four(p + kQs), heads = four(p);
      __m512i lo = _mm512_and_si512(qv, low4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(qv, 4), low4);
      if (kFive) {
        lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(_mm512_shuffle_epi8(heads, qh_lo), bit),
                                  lo, sixteen);
        hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(_mm512_shuffle_epi8(heads, qh_hi), bit),
                                  hi, sixteen);
      }
      const __m512 d = halves_to_lanes(_mm512_shuffle_epi8(heads, d_bytes));
      __m512 m;
      if (kMin) m = halves_to_lanes(_mm512_shuffle_epi8(heads, m_bytes));
      for (int t = 0; t < N; ++t) {
        const std::int8_t* xv = xr[t] + g * 128;
        const __m512i l = _mm512_loadu_si512(lanes[t] + g * 16);
        __m512i s = kMin ? _mm512_setzero_si512() : l;
        s = _mm512_dpbusd_epi32(s, lo, _mm512_loadu_si512(xv));
        s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(xv + 64));
        acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[t]);
        if (kMin) acc[t] = _mm512_fmadd_ps(m, _mm512_cvtepi32_ps(l), acc[t]);
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
      y[static_cast<std::size_t>(b + t) * ldy + static_cast<std::size_t>(r)] =
          (_mm512_reduce_add_ps(acc[t]) + tail[t]) * x.scales[static_cast<std::size_t>(b + t)];
    }
  }
}

// Tokens four at a time (each block read once for all of them), then the rest.
template <template <int> class Kernel>
void tokens(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
            std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
            std::size_t ldy) {
  std::int64_t b = b0;
  for (; b + 4 <= b1; b += 4) Kernel<4>::run(w, x, sums, b, begin, end, y, ldy);
  switch (b1 - b) {
    case 3:
      Kernel<3>::run(w, x, sums, b, begin, end, y, ldy);
      break;
    case 2:
      Kernel<2>::run(w, x, sums, b, begin, end, y, ldy);
      break;
    case 1:
      Kernel<1>::run(w, x, sums, b, begin, end, y, ldy);
      break;
    default:
      break;
  }
}

template <int N>
struct Q6K {
  static void run(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                  std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
    q6_k_tokens<N>(w, x, sums, b, begin, end, y, ldy);
  }
};

template <int N>
struct Q4K {
  static void run(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                  std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
    k_with_min_tokens<false, N>(w, x, sums, b, begin, end, y, ldy);
  }
};

template <int N>
struct Q5K {
  static void run(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                  std::int64_t b, std::int64_t begin, std::int64_t end, float* y, std::size_t ldy) {
    k_with_min_tokens<true, N>(w, x, sums, b, begin, end, y, ldy);
  }
};

template <KQuantType kType>
struct Block32 {
  template <int N>
  struct Tokens {
    static void run(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                    std::int64_t b, std::int64_t begin, std::int64_t end, float* y,
                    std::size_t ldy) {
      block32_tokens<kType, N>(w, x, sums, b, begin, end, y, ldy);
    }
  };
};

}  // namespace

KQuantFn kquant_avx512(KQuantType type) {
  switch (type) {
    case KQuantType::kQ4_0:
      return tokens<Block32<KQuantType::kQ4_0>::Tokens>;
    case KQuantType::kQ4_1:
      return tokens<Block32<KQuantType::kQ4_1>::Tokens>;
    case KQuantType::kQ5_0:
      return tokens<Block32<KQuantType::kQ5_0>::Tokens>;
    case KQuantType::kQ5_1:
      return tokens<Block32<KQuantType::kQ5_1>::Tokens>;
    case KQuantType::kQ4_K:
      return tokens<Q4K>;
    case KQuantType::kQ5_K:
      return tokens<Q5K>;
    case KQuantType::kQ6_K:
      break;
  }
  return tokens<Q6K>;
}

}  // namespace nanochat::kernels
