// AVX-512 kernel (compiled with AVX-512 F/BW/VL/VNNI/VBMI flags; dispatch only selects it when
// the CPU has F, BW and VNNI). Layout kStride64: a 64-byte load holds the codes of 4 x 64
// consecutive weights, one 2-bit field per run, so every activation load is a plain aligned
// 64-byte load in natural order. vpdpbusd multiplies codes (u8) by activations (s8) and adds four
// products into each int32 lane: 64 multiply-adds per instruction, exact.
#include <immintrin.h>

// GCC 12 reports its own _mm512_reduce_add_* helpers as reading an uninitialised value (a known
// false positive in avx512fintrin.h); the intrinsics are correct.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "tile_driver.hpp"

namespace nanochat::kernels {
namespace {

// Software prefetch distance along the weight stream. The hardware prefetcher alone leaves one
// core well short of its read bandwidth on out-of-cache matrices (the arithmetic between loads
// limits how many misses are in flight). Measured on a Zen 5 with `nanochat benchmark kernels
// --shape 65536x16384 -b 1 -t 1`: 4 KiB 35.6, 8 KiB 41.2, 16 KiB 38.7, 32 KiB 39.9 GB/s; T1
// (L2) and NTA hints were no better. Prefetches never fault, so running past the end of the
// buffer is harmless.
constexpr long kPrefetchBytes = 8192;

// Gfni: each 2-bit field j is moved to the bottom of its byte by one gf2p8affineqb (an 8x8 bit
// matrix per byte) instead of a shift and a mask — three fewer instructions per 64-byte line,
// which lets one core overlap more of its arithmetic with the weight stream. Single-token
// passes only (see accumulate).
template <bool Gfni>
struct Avx512Micro {
  // Bit matrices for gf2p8affineqb: result bit i = parity(matrix byte (7 - i) & x), so byte 7
  // selects bit 2j into bit 0 and byte 6 bit 2j + 1 into bit 1.
  static constexpr long long field_matrix(int j) {
    return static_cast<long long>((std::uint64_t{1} << (2 * j)) << 56 |
                                  (std::uint64_t{1} << (2 * j + 1)) << 48);
  }

  // total[b * R + r] = sixteen int32 lanes whose sum is row r's product with token b (before
  // the activation-sum correction).
  template <int R, int NB>
  [[gnu::always_inline]] static inline void accumulate(const std::uint8_t* tile,
                                                       std::int64_t chunks,
                                                       const std::int8_t* const (&x)[NB],
                                                       __m512i (&total)[R * NB]) {
    // vpdpbusd has a latency of several cycles; with few (row, token) pairs, one accumulator
    // each would serialise the four j-steps of a chunk. S accumulators per pair keep at least
    // 16 dependency chains in flight.
    constexpr int S = R * NB >= 16 ? 1 : (R * NB >= 8 ? 2 : 4);
    // GFNI's single instruction runs on the multiply pipes, beside vpdpbusd: it pays where one
    // token streams weights from memory, while with several tokens the arithmetic is the limit
    // and shift + mask, on the other pipes, is faster (2560x2560, 64 tokens, 8x2 tiles: 867 vs
    // 931 us on a Zen 5 core).
    constexpr bool gfni = Gfni && NB == 1;
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
          __m512i u;
          if constexpr (gfni) {
            u = _mm512_gf2p8affine_epi64_epi8(w[r], _mm512_set1_epi64(field_matrix(j)), 0);
          } else {
            u = _mm512_and_si512(_mm512_srli_epi16(w[r], 2 * j), mask);
          }
          static_for<NB>(
              [&](auto b) { acc[r][b][j % S] = _mm512_dpbusd_epi32(acc[r][b][j % S], u, xv[b]); });
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

void gemm(const PackedMatrix& w, const PackedActivations& x, int token_block,
          std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  if (avx512_uses_gfni()) {
    gemm_dispatch<Avx512Micro<true>>(w, x, token_block, tile_begin, tile_end, y, ldy);
  } else {
    gemm_dispatch<Avx512Micro<false>>(w, x, token_block, tile_begin, tile_end, y, ldy);
  }
}

std::uint64_t read_probe(const std::uint8_t* data, std::size_t bytes) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (std::size_t i = 0; i < bytes; i += 256) {
    for (std::size_t line = 0; line < 256; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(data + i + line + kPrefetchBytes), _MM_HINT_T0);
    }
    a = _mm512_add_epi64(a, _mm512_load_si512(data + i));
    b = _mm512_add_epi64(b, _mm512_load_si512(data + i + 64));
    c = _mm512_add_epi64(c, _mm512_load_si512(data + i + 128));
    d = _mm512_add_epi64(d, _mm512_load_si512(data + i + 192));
  }
  return static_cast<std::uint64_t>(
      _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d))));
}

constexpr int kTileRows[] = {1, 2, 4, 8};
constexpr int kTokenBlocks[] = {1, 2, 4};

}  // namespace

const KernelInfo& avx512_kernel() {
  static const KernelInfo info{Isa::kAvx512, "avx512-vnni", Layout::kStride64, kTileRows,
                               kTokenBlocks, gemm,          read_probe};
  return info;
}

}  // namespace nanochat::kernels
