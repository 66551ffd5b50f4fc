// The AVX-512 micro-kernel for the kBase3 layout (the avx512_vbmi ISA unit: the avx512 unit's
// extensions plus AVX512-VBMI; gemm_avx512.cpp calls it only on CPUs that have them). A 64-byte
// line holds 320 weights, five to a byte as the base-3 number q = c0*81 + c1*27 + c2*9 + c3*3 + c4
// (packed.hpp), so decoding streams 1.6 bits per weight instead of 2 — the bound on one token,
// which reads every weight once.
//
// Decoding a line, 64 bytes at a time:
//   c0 = (q >= 81) + (q >= 162)   two byte compares into masks, two masked moves;
//   r  = q - 81 * c0              two masked subtractions, r in [0, 80];
//   v  = T[r]                     one vpermi2b over a 128-byte table (two registers) holding
//                                 c1 | c2 << 2 | c3 << 4 | c4 << 6 — a kStride64 byte, unpacked
//                                 from there as the 2-bit kernel does.
// About 12 instructions and 5 vpdpbusd per 320 weights (the 2-bit kernel: 5 and 4 per 256).
// Measured on a Zen 5 core streaming a 65536x12800 matrix from memory, one token: 7.7 ms against
// 10.4 ms for the 2-bit layout, both near the read bandwidth.
#include "avx512_micro.hpp"

namespace nanochat::kernels {
namespace {

constexpr int kDigits = 5;
constexpr std::int64_t kUnitWeights = 320;

// c1 | c2 << 2 | c3 << 4 | c4 << 6 for r = c1*27 + c2*9 + c3*3 + c4 (r < 81); the rest unused.
struct FieldTable {
  alignas(64) std::uint8_t bytes[128] = {};
  constexpr FieldTable() {
    for (int r = 0; r < 81; ++r) {
      bytes[r] =
          static_cast<std::uint8_t>((r / 27) | (r / 9 % 3) << 2 | (r / 3 % 3) << 4 | (r % 3) << 6);
    }
  }
};
constexpr FieldTable kFieldTable;

// Tail: how many of the last unit's five digits hold weights of the row (the rest face
// activations past the padded row, which are not read: they count as zeros).
template <int Tail>
struct Base3Micro {
  struct Decoder {
    __m512i lo = _mm512_load_si512(kFieldTable.bytes);
    __m512i hi = _mm512_load_si512(kFieldTable.bytes + 64);
    __m512i c81 = _mm512_set1_epi8(81);
    __m512i c162 = _mm512_set1_epi8(static_cast<char>(162));
    __m512i one = _mm512_set1_epi8(1);

    // c0 and the byte of the other four 2-bit fields.
    [[gnu::always_inline]] inline void decode(__m512i q, __m512i& c0, __m512i& fields) const {
      const __mmask64 k1 = _mm512_cmpge_epu8_mask(q, c81);
      const __mmask64 k2 = _mm512_cmpge_epu8_mask(q, c162);
      const __m512i first = _mm512_maskz_mov_epi8(k1, one);
      c0 = _mm512_mask_add_epi8(first, k2, first, one);
      __m512i r = _mm512_mask_sub_epi8(q, k1, q, c81);
      r = _mm512_mask_sub_epi8(r, k2, r, c81);
      fields = _mm512_permutex2var_epi8(lo, r, hi);
    }
  };

  // The activations of digit i of the unit at `xc`, zero past the row.
  template <int Digits>
  [[gnu::always_inline]] static inline __m512i x_digit(const std::int8_t* xc, int i) {
    return i < Digits ? _mm512_load_si512(xc + i * 64) : _mm512_setzero_si512();
  }

  // One token. Fields at scale 1 into a, at scale 4 into b (as the 2-bit kernel's lo and hi);
  // with one or two rows, two of each, so that enough vpdpbusd chains are in flight.
  template <int R, int Digits>
  [[gnu::always_inline]] static inline void unit_one(const std::uint8_t* wc, const std::int8_t* xc,
                                                     const Decoder& dec, __m512i (&a)[R][2],
                                                     __m512i (&b)[R][2]) {
    constexpr int s1 = R >= 4 ? 0 : 1;
    const __m512i times1 = _mm512_set1_epi8(0x03), times4 = _mm512_set1_epi8(0x0c);
    __m512i xv[kDigits];
    static_for<kDigits>([&](auto i) { xv[i] = x_digit<Digits>(xc, i); });
    static_for<R>([&](auto r) {
      _mm_prefetch(reinterpret_cast<const char*>(wc + r * kChunkBytes + kPrefetchBytes),
                   _MM_HINT_T0);
      __m512i c0, v;
      dec.decode(_mm512_load_si512(wc + r * kChunkBytes), c0, v);
      const __m512i down = _mm512_srli_epi16(v, 4);  // fields 3 and 4 to bits 0-3
      a[r][0] = _mm512_dpbusd_epi32(a[r][0], c0, xv[0]);
      if constexpr (Digits > 1)
        a[r][s1] = _mm512_dpbusd_epi32(a[r][s1], _mm512_and_si512(v, times1), xv[1]);
      if constexpr (Digits > 2)
        b[r][0] = _mm512_dpbusd_epi32(b[r][0], _mm512_and_si512(v, times4), xv[2]);
      if constexpr (Digits > 3)
        a[r][0] = _mm512_dpbusd_epi32(a[r][0], _mm512_and_si512(down, times1), xv[3]);
      if constexpr (Digits > 4)
        b[r][s1] = _mm512_dpbusd_epi32(b[r][s1], _mm512_and_si512(down, times4), xv[4]);
    });
  }

  // Several tokens: each field moved down and masked once, then multiplied with every token.
  template <int R, int NB, int Digits>
  [[gnu::always_inline]] static inline void unit_many(const std::uint8_t* wc,
                                                      const std::int8_t* const (&x)[NB],
                                                      std::int64_t offset, const Decoder& dec,
                                                      __m512i (&acc)[R][NB]) {
    const __m512i mask = _mm512_set1_epi8(3);
    static_for<R>([&](auto r) {
      _mm_prefetch(reinterpret_cast<const char*>(wc + r * kChunkBytes + kPrefetchBytes),
                   _MM_HINT_T0);
      __m512i f[kDigits];
      dec.decode(_mm512_load_si512(wc + r * kChunkBytes), f[0], f[1]);
      const __m512i v = f[1];
      f[1] = _mm512_and_si512(v, mask);
      f[2] = _mm512_and_si512(_mm512_srli_epi16(v, 2), mask);
      f[3] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
      f[4] = _mm512_and_si512(_mm512_srli_epi16(v, 6), mask);
      static_for<Digits>([&](auto i) {
        static_for<NB>([&](auto b) {
          acc[r][b] =
              _mm512_dpbusd_epi32(acc[r][b], f[i], _mm512_load_si512(x[b] + offset + i * 64));
        });
      });
    });
  }

  template <int R, int NB>
  static void run_into(const std::uint8_t* tile, std::int64_t units,
                       const std::int8_t* const (&x)[NB], const std::int32_t (&sums)[NB],
                       std::int32_t* y, std::size_t ldy, int rows) {
    const Decoder dec;
    __m512i total[R * NB];
    if constexpr (NB == 1) {
      __m512i a[R][2], b[R][2];
      static_for<R>(
          [&](auto r) { a[r][0] = a[r][1] = b[r][0] = b[r][1] = _mm512_setzero_si512(); });
      for (std::int64_t u = 0; u + 1 < units; ++u) {
        unit_one<R, kDigits>(tile + u * R * kChunkBytes, x[0] + u * kUnitWeights, dec, a, b);
      }
      unit_one<R, Tail>(tile + (units - 1) * R * kChunkBytes, x[0] + (units - 1) * kUnitWeights,
                        dec, a, b);
      static_for<R>([&](auto r) {
        total[r] = _mm512_add_epi32(_mm512_add_epi32(a[r][0], a[r][1]),
                                    _mm512_srai_epi32(_mm512_add_epi32(b[r][0], b[r][1]), 2));
      });
    } else {
      __m512i acc[R][NB];
      static_for<R>(
          [&](auto r) { static_for<NB>([&](auto b) { acc[r][b] = _mm512_setzero_si512(); }); });
      for (std::int64_t u = 0; u + 1 < units; ++u) {
        unit_many<R, NB, kDigits>(tile + u * R * kChunkBytes, x, u * kUnitWeights, dec, acc);
      }
      unit_many<R, NB, Tail>(tile + (units - 1) * R * kChunkBytes, x, (units - 1) * kUnitWeights,
                             dec, acc);
      static_for<R>([&](auto r) { static_for<NB>([&](auto b) { total[b * R + r] = acc[r][b]; }); });
    }
    Avx512Micro<false>::store<R, NB>(total, sums, y, ldy, rows);
  }
};

}  // namespace

void gemm_avx512_vbmi(const PackedMatrix& w, const PackedActivations& x, int token_block,
                      std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                      std::size_t ldy) {
  // Digits of the last unit that hold weights: its 64-weight runs that start before cols.
  const std::int64_t left = w.cols - (w.chunks - 1) * kUnitWeights;
  switch ((left + 63) / 64) {
    case 1:
      return gemm_dispatch<Base3Micro<1>>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 2:
      return gemm_dispatch<Base3Micro<2>>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 3:
      return gemm_dispatch<Base3Micro<3>>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 4:
      return gemm_dispatch<Base3Micro<4>>(w, x, token_block, tile_begin, tile_end, y, ldy);
    default:
      return gemm_dispatch<Base3Micro<5>>(w, x, token_block, tile_begin, tile_end, y, ldy);
  }
}

}  // namespace nanochat::kernels
