// AVX-512 kernel (the avx512 ISA unit: compiled with the extensions src/CMakeLists.txt lists for
// it, and run only on CPUs that have every one of them). Layout kStride64: a 64-byte load holds
// the codes of 4 x 64 consecutive weights, one 2-bit field per run, so every activation load is
// a plain aligned 64-byte load in natural order. vpdpbusd multiplies codes (u8) by activations
// (s8) and adds four products into each int32 lane: 64 multiply-adds per instruction, exact.
#include <cstdint>

#include "avx512_micro.hpp"
#include "nanochat/util/cpu.hpp"

namespace nanochat::kernels {
namespace {

void gemm(const PackedMatrix& w, const PackedActivations& x, int token_block,
          std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  if (w.layout == Layout::kBase3) {
    if (!avx512_uses_vbmi()) tile_driver_error("a base-3 matrix without VBMI, rows", w.rows);
    gemm_avx512_vbmi(w, x, token_block, tile_begin, tile_end, y, ldy);
  } else if (w.variant == 1 && avx512_uses_gfni()) {
    gemm_avx512_gfni(w, x, token_block, tile_begin, tile_end, y, ldy);
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

int variants() { return avx512_uses_gfni() ? 2 : 1; }
const char* variant_name(int variant) { return variant == 1 ? "gfni" : "shift"; }

}  // namespace

const KernelInfo& avx512_kernel() {
  static const KernelInfo info{Isa::kAvx512, "avx512-vnni", Layout::kStride64,
                               kTileRows,    kTokenBlocks,  gemm,
                               read_probe,   variants,      variant_name};
  return info;
}

}  // namespace nanochat::kernels
