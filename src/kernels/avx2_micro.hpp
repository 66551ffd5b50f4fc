// Internal to src/kernels: the AVX2 micro-kernel, included by gemm_avx2.cpp (plain AVX2) and
// gemm_avx2_vnni.cpp (compiled with -mavxvnni, run only on CPUs with AVX-VNNI), so no AVX-VNNI
// instruction can reach a CPU without it. Internal linkage: each TU has its own copy.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "nanochat/kernels/packed.hpp"
#include "tile_driver.hpp"

namespace nanochat::kernels {
namespace {

inline std::int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x1));
  return _mm_cvtsi128_si32(s);
}

// Prefetch distance along the weight stream; see gemm_avx512.cpp for how it was chosen.
constexpr long kPrefetchBytes = 8192;

// Vnni: AVX-VNNI's 256-bit vpdpbusd (Intel cores since Alder Lake, AMD since Zen 4) adds four
// code x activation products straight into int32 lanes, replacing vpmaddubsw, the int16 adds and
// the widening vpmaddwd.
template <bool Vnni>
struct Avx2Micro {
  // Sums stored straight into y (see tile_driver.hpp), four rows at a time through one
  // transposing reduction where the tile has four rows.
  template <int R, int NB>
  static void run_into(const std::uint8_t* tile, std::int64_t chunks,
                       const std::int8_t* const (&x)[NB], const std::int32_t (&sums)[NB],
                       std::int32_t* y, std::size_t ldy, int rows) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    // vpdpbusd's latency is several cycles and every step of a chunk adds into the same pair's
    // sum: with few (row, token) pairs, S accumulators per pair keep at least 8 chains in flight.
    // (vpmaddubsw's int16 sums are independent per chunk already.)
    constexpr int S = !Vnni || R * NB >= 8 ? 1 : (R * NB >= 4 ? 2 : 4);
    __m256i acc[R][NB][S];
    static_for<R>([&](auto r) {
      static_for<NB>(
          [&](auto b) { static_for<S>([&](auto s) { acc[r][b][s] = _mm256_setzero_si256(); }); });
    });

    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::uint8_t* wc = tile + c * R * kChunkBytes;
      static_for<R>([&](auto r) {
        _mm_prefetch(reinterpret_cast<const char*>(wc + r * kChunkBytes + kPrefetchBytes),
                     _MM_HINT_T0);
      });
      __m256i acc16[R][NB];
      if constexpr (!Vnni) {
        static_for<R>(
            [&](auto r) { static_for<NB>([&](auto b) { acc16[r][b] = _mm256_setzero_si256(); }); });
      }
      static_for<2>([&](auto h) {
        __m256i w[R];
        static_for<R>([&](auto r) {
          w[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wc + r * kChunkBytes + h * 32));
        });
        static_for<4>([&](auto l) {
          __m256i xv[NB];
          static_for<NB>([&](auto b) {
            xv[b] = _mm256_load_si256(
                reinterpret_cast<const __m256i*>(x[b] + c * kChunk + h * 128 + l * 32));
          });
          static_for<R>([&](auto r) {
            const __m256i u = _mm256_and_si256(_mm256_srli_epi16(w[r], 2 * l), mask);
            static_for<NB>([&](auto b) {
              if constexpr (Vnni) {
                constexpr int s = (h * 4 + l) % S;
                acc[r][b][s] = _mm256_dpbusd_avx_epi32(acc[r][b][s], u, xv[b]);
              } else {
                acc16[r][b] = _mm256_add_epi16(acc16[r][b], _mm256_maddubs_epi16(u, xv[b]));
              }
            });
          });
        });
      });
      if constexpr (!Vnni) {
        static_for<R>([&](auto r) {
          static_for<NB>([&](auto b) {
            acc[r][b][0] = _mm256_add_epi32(acc[r][b][0], _mm256_madd_epi16(acc16[r][b], ones));
          });
        });
      }
    }
    __m256i total[R][NB];
    static_for<R>([&](auto r) {
      static_for<NB>([&](auto b) {
        total[r][b] = acc[r][b][0];
        static_for<S - 1>(
            [&](auto s) { total[r][b] = _mm256_add_epi32(total[r][b], acc[r][b][s + 1]); });
      });
    });
    static_for<NB>([&](auto b) {
      std::int32_t* yb = y + static_cast<std::size_t>(b) * ldy;
      if constexpr (R == 4) {
        // [a, b, c, d] from four vectors of eight partial sums.
        const __m256i ab = _mm256_hadd_epi32(total[0][b], total[1][b]);
        const __m256i cd = _mm256_hadd_epi32(total[2][b], total[3][b]);
        const __m256i q = _mm256_hadd_epi32(ab, cd);
        __m128i v = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        v = _mm_sub_epi32(v, _mm_set1_epi32(sums[b]));
        if (rows == 4) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(yb), v);
        } else {
          alignas(16) std::int32_t lanes[4];
          _mm_store_si128(reinterpret_cast<__m128i*>(lanes), v);
          for (int r = 0; r < rows; ++r) yb[r] = lanes[r];
        }
      } else {
        static_for<R>([&](auto r) {
          if (r < rows) yb[r] = hsum(total[r][b]) - sums[b];
        });
      }
    });
  }
};

}  // namespace

// The AVX-VNNI instantiation (gemm_avx2_vnni.cpp).
void gemm_avx2_vnni(const PackedMatrix& w, const PackedActivations& x, int token_block,
                    std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                    std::size_t ldy);

}  // namespace nanochat::kernels
