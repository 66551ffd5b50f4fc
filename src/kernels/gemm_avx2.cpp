// AVX2 kernel (compiled with -mavx2 -mfma; runs on any AVX2 CPU). Layout kTq2: one 32-byte load
// holds four codes for each of 32 consecutive weights of four 32-weight runs, so activations are
// read in natural order. vpmaddubsw multiplies codes (u8) by activations (s8) into int16 pairs
// (|pair| <= 2*2*128 = 512, no saturation); eight such terms per chunk stay below 4096 before
// vpmaddwd widens them to int32 once per chunk. On CPUs with AVX-VNNI the same micro-kernel
// (avx2_micro.hpp) runs with 256-bit vpdpbusd instead, from gemm_avx2_vnni.cpp.
#include <immintrin.h>

#include <cstdint>

#include "avx2_micro.hpp"
#include "nanochat/kernels/registry.hpp"

namespace nanochat::kernels {
namespace {

void gemm(const PackedMatrix& w, const PackedActivations& x, int token_block,
          std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  if (avx2_uses_avx_vnni()) {
    gemm_avx2_vnni(w, x, token_block, tile_begin, tile_end, y, ldy);
  } else {
    gemm_dispatch<Avx2Micro<false>>(w, x, token_block, tile_begin, tile_end, y, ldy);
  }
}

std::uint64_t read_probe(const std::uint8_t* data, std::size_t bytes) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (std::size_t i = 0; i < bytes; i += 128) {
    for (std::size_t line = 0; line < 128; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(data + i + line + kPrefetchBytes), _MM_HINT_T0);
    }
    a = _mm256_add_epi64(a, _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i)));
    b = _mm256_add_epi64(b, _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i + 32)));
    c = _mm256_add_epi64(c, _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i + 64)));
    d = _mm256_add_epi64(d, _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

constexpr int kTileRows[] = {1, 2, 4};
constexpr int kTokenBlocks[] = {1, 2, 4};

}  // namespace

const KernelInfo& avx2_kernel() {
  static const KernelInfo info{Isa::kAvx2, "avx2",     Layout::kTq2, kTileRows,    kTokenBlocks,
                               gemm,       read_probe, one_variant,  plain_variant};
  return info;
}

}  // namespace nanochat::kernels
