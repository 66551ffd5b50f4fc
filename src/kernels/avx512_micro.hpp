// The AVX-512 micro-kernel, shared by gemm_avx512.cpp (compiled for the avx512 unit: F, BW,
// VL, DQ, VNNI) and gemm_avx512_gfni.cpp (the same plus GFNI, run only on CPUs that have it), so
// no GFNI instruction is ever compiled into the unit every AVX-512 CPU runs. Everything here is
// a template over Gfni: each unit instantiates its own copy with its own flags.
#pragma once

#include <immintrin.h>

// GCC 12 reports its own _mm512_reduce_add_* helpers as reading an uninitialised value (a known
// false positive in avx512fintrin.h); the intrinsics are correct.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "nanochat/kernels/registry.hpp"
#include "tile_driver.hpp"

namespace nanochat::kernels {
// Internal linkage: each ISA unit that includes this has its own copy, compiled with its flags.
namespace {

// Software prefetch distance along the weight stream. The hardware prefetcher alone leaves one
// core well short of its read bandwidth on out-of-cache matrices (the arithmetic between loads
// limits how many misses are in flight). Measured on a Zen 5 with `nanochat benchmark kernels
// --shape 65536x16384 -b 1 -t 1`: 4 KiB 35.6, 8 KiB 41.2, 16 KiB 38.7, 32 KiB 39.9 GB/s; T1
// (L2) and NTA hints were no better. Prefetches never fault, so running past the end of the
// buffer is harmless.
constexpr long kPrefetchBytes = 8192;

// One token (GEMV, decode): no field is moved to the bottom of its byte. Fields 0 and 1 are only
// masked in place, so their codes arrive times 1 and times 4; with Gfni, one gf2p8affineqb (an 8x8
// bit matrix per byte) moves field 2 to bits 0-1 and field 3 to bits 2-3, otherwise one shift by
// four bits and the same two masks do. Products at scale 1 and at scale 4 go to separate
// accumulators, and the second is divided by 4 exactly at the end (every lane is a multiple of 4;
// codes times 4 are at most 8, valid unsigned bytes). That is 4 or 5 cheap instructions per
// 64-byte line where a shift and a mask per field took 7 and a GFNI instruction per field 4 —
// which share the multiply pipes with vpdpbusd. Measured on a Zen 5 core, one thread
// (`nanochat benchmark kernels -b 1`): in cache 9-14% faster than GFNI per field, out of cache
// 96-99% of read bandwidth instead of 93-94%.
// Several tokens (GEMM): each field is shifted down and masked once and the result serves every
// token; there the arithmetic is the limit and shift + mask, on other pipes than vpdpbusd, beat
// GFNI (2560x2560, 64 tokens, 8x2 tiles: 867 vs 931 us).
template <bool Gfni>
struct Avx512Micro {
  // Bit matrix for gf2p8affineqb moving field j to bits `to` and `to` + 1: result bit i =
  // parity(matrix byte (7 - i) & x).
  static constexpr long long field_matrix(int j, int to) {
    return static_cast<long long>((std::uint64_t{1} << (2 * j)) << (8 * (7 - to)) |
                                  (std::uint64_t{1} << (2 * j + 1)) << (8 * (6 - to)));
  }

  // total[b * R + r] = sixteen int32 lanes whose sum is row r's product with token b (before
  // the activation-sum correction).
  template <int R, int NB>
  [[gnu::always_inline]] static inline void accumulate(const std::uint8_t* tile,
                                                       std::int64_t chunks,
                                                       const std::int8_t* const (&x)[NB],
                                                       __m512i (&total)[R * NB]) {
    if constexpr (NB == 1) {
      accumulate_one<R>(tile, chunks, x[0], total);
    } else {
      // vpdpbusd has a latency of several cycles; with few (row, token) pairs, one accumulator
      // each would serialise the four j-steps of a chunk. S accumulators per pair keep at least
      // 16 dependency chains in flight.
      constexpr int S = R * NB >= 16 ? 1 : (R * NB >= 8 ? 2 : 4);
      const __m512i mask = _mm512_set1_epi8(3);
      __m512i acc[R][NB][S];
      static_for<R>([&](auto r) {
        static_for<NB>(
            [&](auto b) { static_for<S>([&](auto s) { acc[r][b][s] = _mm512_setzero_si512(); }); });
      });
      for (std::int64_t c = 0; c < chunks; ++c) {
        const std::uint8_t* wc = tile + c * R * kChunkBytes;
        __m512i w[R];
        static_for<R>([&](auto r) {
          _mm_prefetch(reinterpret_cast<const char*>(wc + r * kChunkBytes + kPrefetchBytes),
                       _MM_HINT_T0);
          w[r] = _mm512_load_si512(wc + r * kChunkBytes);
        });
        static_for<4>([&](auto j) {
          __m512i xv[NB];
          static_for<NB>([&](auto b) { xv[b] = _mm512_load_si512(x[b] + c * kChunk + j * 64); });
          static_for<R>([&](auto r) {
            const __m512i u = _mm512_and_si512(_mm512_srli_epi16(w[r], 2 * j), mask);
            static_for<NB>([&](auto b) {
              acc[r][b][j % S] = _mm512_dpbusd_epi32(acc[r][b][j % S], u, xv[b]);
            });
          });
        });
      }
      static_for<R>([&](auto r) {
        static_for<NB>([&](auto b) {
          total[b * R + r] = acc[r][b][0];
          static_for<S - 1>([&](auto s) {
            total[b * R + r] = _mm512_add_epi32(total[b * R + r], acc[r][b][s + 1]);
          });
        });
      });
    }
  }

  // One token: fields at scale 1 into lo, at scale 4 into hi (see above).
  template <int R>
  [[gnu::always_inline]] static inline void accumulate_one(const std::uint8_t* tile,
                                                           std::int64_t chunks,
                                                           const std::int8_t* x,
                                                           __m512i (&total)[R]) {
    constexpr int S = R >= 8 ? 1 : (R >= 4 ? 2 : 4);  // at least 16 chains, as above
    constexpr int s0 = 0, s1 = S > 1 ? 1 : 0;
    __m512i lo[R][S], hi[R][S];
    static_for<R>([&](auto r) {
      static_for<S>([&](auto s) {
        lo[r][s] = _mm512_setzero_si512();
        hi[r][s] = _mm512_setzero_si512();
      });
    });
    const __m512i times1 = _mm512_set1_epi8(0x03), times4 = _mm512_set1_epi8(0x0c);
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::uint8_t* wc = tile + c * R * kChunkBytes;
      const std::int8_t* xc = x + c * kChunk;
      __m512i w[R];
      static_for<R>([&](auto r) {
        _mm_prefetch(reinterpret_cast<const char*>(wc + r * kChunkBytes + kPrefetchBytes),
                     _MM_HINT_T0);
        w[r] = _mm512_load_si512(wc + r * kChunkBytes);
      });
      const __m512i x0 = _mm512_load_si512(xc), x1 = _mm512_load_si512(xc + 64);
      const __m512i x2 = _mm512_load_si512(xc + 128), x3 = _mm512_load_si512(xc + 192);
      static_for<R>([&](auto r) {
        __m512i f2, f3;  // field 2 times 1, field 3 times 4
        if constexpr (Gfni) {
          f2 = _mm512_gf2p8affine_epi64_epi8(w[r], _mm512_set1_epi64(field_matrix(2, 0)), 0);
          f3 = _mm512_gf2p8affine_epi64_epi8(w[r], _mm512_set1_epi64(field_matrix(3, 2)), 0);
        } else {
          // A 16-bit shift: the high byte's bits land in bits 4-7, which the masks drop.
          const __m512i down = _mm512_srli_epi16(w[r], 4);
          f2 = _mm512_and_si512(down, times1);
          f3 = _mm512_and_si512(down, times4);
        }
        lo[r][s0] = _mm512_dpbusd_epi32(lo[r][s0], _mm512_and_si512(w[r], times1), x0);
        hi[r][s0] = _mm512_dpbusd_epi32(hi[r][s0], _mm512_and_si512(w[r], times4), x1);
        lo[r][s1] = _mm512_dpbusd_epi32(lo[r][s1], f2, x2);
        hi[r][s1] = _mm512_dpbusd_epi32(hi[r][s1], f3, x3);
      });
    }
    static_for<R>([&](auto r) {
      __m512i a = lo[r][0], b = hi[r][0];
      static_for<S - 1>([&](auto s) {
        a = _mm512_add_epi32(a, lo[r][s + 1]);
        b = _mm512_add_epi32(b, hi[r][s + 1]);
      });
      total[r] = _mm512_add_epi32(a, _mm512_srai_epi32(b, 2));
    });
  }

  // The horizontal sums four rows at a time through one transposing reduction (about 14
  // instructions for four sums, where _mm512_reduce_add_epi32 takes about ten for one; with
  // short rows — a 256-wide layer has a single chunk — the reductions were most of the work),
  // stored straight into y.
  template <int R, int NB>
  static void run_into(const std::uint8_t* tile, std::int64_t chunks,
                       const std::int8_t* const (&x)[NB], const std::int32_t (&sums)[NB],
                       std::int32_t* y, std::size_t ldy, int rows) {
    __m512i total[R * NB];
    accumulate<R, NB>(tile, chunks, x, total);
    store<R, NB>(total, sums, y, ldy, rows);
  }

  // y[b * ldy + r] = the sum of total[b * R + r]'s lanes - sums[b], for r < rows.
  template <int R, int NB>
  [[gnu::always_inline]] static inline void store(const __m512i (&total)[R * NB],
                                                  const std::int32_t (&sums)[NB], std::int32_t* y,
                                                  std::size_t ldy, int rows) {
    static_for<NB>([&](auto b) {
      std::int32_t* yb = y + static_cast<std::size_t>(b) * ldy;
      if constexpr (R % 4 == 0) {
        static_for<R / 4>([&](auto g) {
          const __m128i v = _mm_sub_epi32(sum4(total + b * R + 4 * g), _mm_set1_epi32(sums[b]));
          const int left = rows - 4 * g;
          if (left >= 4) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(yb + 4 * g), v);
          } else if (left > 0) {
            _mm_mask_storeu_epi32(yb + 4 * g, static_cast<__mmask8>((1u << left) - 1u), v);
          }
        });
      } else {
        static_for<R>([&](auto r) {
          if (r < rows) yb[r] = _mm512_reduce_add_epi32(total[b * R + r]) - sums[b];
        });
      }
    });
  }

  // The sums of v[0..3]'s sixteen lanes, in order.
  [[gnu::always_inline]] static inline __m128i sum4(const __m512i* v) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [a, b, c, d] partial sums.
    const __m512i ab =
        _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    const __m512i cd =
        _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    __m512i q = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    // Across the four 128-bit lanes.
    q = _mm512_add_epi32(q, _mm512_shuffle_i32x4(q, q, _MM_SHUFFLE(1, 0, 3, 2)));
    q = _mm512_add_epi32(q, _mm512_shuffle_i32x4(q, q, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castsi512_si128(q);
  }
};

}  // namespace

// The kBase3 kernel (gemm_avx512_vbmi.cpp).
void gemm_avx512_vbmi(const PackedMatrix& w, const PackedActivations& x, int token_block,
                      std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                      std::size_t ldy);

// The GFNI instantiation (gemm_avx512_gfni.cpp).
void gemm_avx512_gfni(const PackedMatrix& w, const PackedActivations& x, int token_block,
                      std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                      std::size_t ldy);

}  // namespace nanochat::kernels
