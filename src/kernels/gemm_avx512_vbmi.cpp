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
// Measured on a Zen 5 core (`nanochat benchmark kernels --shape 65536x16384 -b 1 -t 1 --isa
// avx512`, the matrix streamed from memory): 6.88 ms against 9.53 ms for the 2-bit layout.
#include <algorithm>

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

// Tail: how many of the last unit's five digits hold weights of the row (its 64-weight runs that
// start before cols). The rest are not multiplied: their activations may lie past the padded row,
// and their weights are zero anyway.
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

  template <int R, int NB>
  static void run_into(const std::uint8_t* tile, std::int64_t units,
                       const std::int8_t* const (&x)[NB], const std::int32_t (&sums)[NB],
                       std::int32_t* y, std::size_t ldy, int rows) {
    static_assert(NB == 1, "several tokens read unpacked tiles (base3_tiles)");
    const Decoder dec;
    // Rows are decoded four at a time, each group over the whole row: eight rows' accumulators,
    // activations and decoding temporaries at once would not fit the 32 registers (measured on a
    // Zen 5, 2560x2560 streamed: eight rows together 116 us, two groups of four 48 us). The second
    // group's lines are the first's neighbours, on their way already.
    constexpr int G = std::min(R, 4);
    __m512i total[R];
    static_for<R / G>([&](auto g) {
      const std::uint8_t* rows_g = tile + g * G * kChunkBytes;
      __m512i a[G][2], b[G][2];
      static_for<G>(
          [&](auto r) { a[r][0] = a[r][1] = b[r][0] = b[r][1] = _mm512_setzero_si512(); });
      for (std::int64_t u = 0; u + 1 < units; ++u) {
        unit_one<G, kDigits>(rows_g + u * R * kChunkBytes, x[0] + u * kUnitWeights, dec, a, b);
      }
      unit_one<G, Tail>(rows_g + (units - 1) * R * kChunkBytes, x[0] + (units - 1) * kUnitWeights,
                        dec, a, b);
      static_for<G>([&](auto r) {
        total[g * G + r] =
            _mm512_add_epi32(_mm512_add_epi32(a[r][0], a[r][1]),
                             _mm512_srai_epi32(_mm512_add_epi32(b[r][0], b[r][1]), 2));
      });
    });
    Avx512Micro<false>::store<R, 1>(total, sums, y, ldy, rows);
  }
};

// Several tokens: decoding every unit again for each pass over the tile would cost more than
// the multiplications (a prefill of 64 tokens passes over each tile 16 times or more), so each
// tile is converted once, into the thread's scratch, to the 2-bit kStride64 layout, and the passes
// run the 2-bit kernel's batched micro-kernel on it (shift-and-mask unpacking, which measured
// faster than reading the codes a byte each: 2560x2560, 64 tokens, 4x4 tiles, 643 vs 673 us).
//
// Both layouts keep byte p of a row's 64-byte units to the weights p, p + 64, p + 128, ... of it,
// so in each byte lane a row is one stream of 2-bit codes, five per base-3 unit (c0, then the
// decoded byte's c1 | c2 << 2 | c3 << 4 | c4 << 6) and four per 2-bit chunk. Four units are five
// chunks, which take their codes with fixed shifts:
//   chunk 0: u0.c0 u0.c1 u0.c2 u0.c3    chunk 1: u0.c4 u1.c0 u1.c1 u1.c2
//   chunk 2: u1.c3 u1.c4 u2.c0 u2.c1    chunk 3: u2.c2 u2.c3 u2.c4 u3.c0    chunk 4: u3.c1 .. u3.c4
// Units past the row's last read as zeros (code 1); chunks past the row's last are not written.
// (16-bit shifts: every shifted value is masked to its own byte, or is a code of at most 2 that
// stays inside it.)
template <int R>
void convert_tile(const std::uint8_t* tile, std::int64_t units, std::int64_t chunks,
                  std::uint8_t* out) {
  const typename Base3Micro<kDigits>::Decoder dec;
  const __m512i zero_c0 = _mm512_set1_epi8(1), zero_fields = _mm512_set1_epi8(0x55);
  const auto bytes = [](int b) { return _mm512_set1_epi8(static_cast<char>(b)); };
  const __m512i m03 = bytes(0x03), m0f = bytes(0x0f), m3f = bytes(0x3f), mf0 = bytes(0xf0),
                mfc = bytes(0xfc);
  for (int r = 0; r < R; ++r) {
    for (std::int64_t u0 = 0; u0 < units; u0 += 4) {
      __m512i c0[4], v[4];
      for (int k = 0; k < 4; ++k) {
        if (u0 + k < units) {
          dec.decode(_mm512_load_si512(tile + ((u0 + k) * R + r) * kChunkBytes), c0[k], v[k]);
        } else {
          c0[k] = zero_c0, v[k] = zero_fields;
        }
      }
      const __m512i chunk[5] = {
          _mm512_or_si512(c0[0], _mm512_and_si512(_mm512_slli_epi16(v[0], 2), mfc)),
          _mm512_or_si512(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v[0], 6), m03),
                                          _mm512_slli_epi16(c0[1], 2)),
                          _mm512_and_si512(_mm512_slli_epi16(v[1], 4), mf0)),
          _mm512_or_si512(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v[1], 4), m0f),
                                          _mm512_slli_epi16(c0[2], 4)),
                          _mm512_slli_epi16(_mm512_and_si512(v[2], m03), 6)),
          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v[2], 2), m3f),
                          _mm512_slli_epi16(c0[3], 6)),
          v[3]};
      const std::int64_t c0_index = u0 / 4 * 5;
      for (int k = 0; k < 5 && c0_index + k < chunks; ++k) {
        _mm512_store_si512(out + ((c0_index + k) * R + r) * kChunkBytes, chunk[k]);
      }
    }
  }
}

template <int R, int NB>
void base3_tiles(const PackedMatrix& w, const PackedActivations& x, std::int64_t tile_begin,
                 std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  const std::int64_t chunks = (w.cols + kChunk - 1) / kChunk;  // of the 2-bit layout
  std::uint8_t* converted = thread_scratch(static_cast<std::size_t>(R * chunks * kChunkBytes));
  for (std::int64_t t = tile_begin; t < tile_end; ++t) {
    convert_tile<R>(w.tile(t), w.chunks, chunks, converted);
    if (t + 1 < tile_end) {  // the next tile, into L2 while the passes over this one run
      const auto* next = reinterpret_cast<const char*>(w.tile(t + 1));
      for (std::size_t b = 0; b < w.tile_bytes(); b += kChunkBytes) {
        _mm_prefetch(next + b, _MM_HINT_T1);
      }
    }
    const std::int64_t row0 = t * R;
    const int rows_here = static_cast<int>(std::min<std::int64_t>(R, w.rows - row0));
    tile_tokens<Avx512Micro<false>, R, NB>(converted, chunks, x, row0, rows_here, y, ldy);
  }
}

template <int R>
void base3_rows(const PackedMatrix& w, const PackedActivations& x, int token_block, int tail,
                std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  if (x.tokens == 1) {  // decoding: weights streamed once, decoded in registers
    switch (tail) {
      case 1:
        return gemm_tiles<Base3Micro<1>, R, 1>(w, x, tile_begin, tile_end, y, ldy);
      case 2:
        return gemm_tiles<Base3Micro<2>, R, 1>(w, x, tile_begin, tile_end, y, ldy);
      case 3:
        return gemm_tiles<Base3Micro<3>, R, 1>(w, x, tile_begin, tile_end, y, ldy);
      case 4:
        return gemm_tiles<Base3Micro<4>, R, 1>(w, x, tile_begin, tile_end, y, ldy);
      default:
        return gemm_tiles<Base3Micro<5>, R, 1>(w, x, tile_begin, tile_end, y, ldy);
    }
  }
  switch (token_block) {
    case 1:
      return base3_tiles<R, 1>(w, x, tile_begin, tile_end, y, ldy);
    case 2:
      return base3_tiles<R, 2>(w, x, tile_begin, tile_end, y, ldy);
    case 4:
      return base3_tiles<R, 4>(w, x, tile_begin, tile_end, y, ldy);
    default:
      tile_driver_error("no kernel processes this many tokens per pass (1, 2 or 4)", token_block);
  }
}

}  // namespace

void gemm_avx512_vbmi(const PackedMatrix& w, const PackedActivations& x, int token_block,
                      std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                      std::size_t ldy) {
  if (x.cols != w.cols) {
    tile_driver_error("the activations' width differs from the matrix's", x.cols, w.cols);
  }
  // Digits of the last unit that hold weights: its 64-weight runs that start before cols.
  const int tail = static_cast<int>((w.cols - (w.chunks - 1) * kUnitWeights + 63) / 64);
  switch (w.tile_rows) {
    case 1:
      return base3_rows<1>(w, x, token_block, tail, tile_begin, tile_end, y, ldy);
    case 2:
      return base3_rows<2>(w, x, token_block, tail, tile_begin, tile_end, y, ldy);
    case 4:
      return base3_rows<4>(w, x, token_block, tail, tile_begin, tile_end, y, ldy);
    case 8:
      return base3_rows<8>(w, x, token_block, tail, tile_begin, tile_end, y, ldy);
    default:
      tile_driver_error("no kernel handles tiles of this many rows", w.tile_rows);
  }
}

}  // namespace nanochat::kernels
