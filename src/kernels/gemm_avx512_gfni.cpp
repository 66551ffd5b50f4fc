// The AVX-512 micro-kernel with GFNI's gf2p8affineqb (the avx512_gfni ISA unit; gemm_avx512.cpp
// only calls it on CPUs that have GFNI).
#include "avx512_micro.hpp"

namespace nanochat::kernels {

void gemm_avx512_gfni(const PackedMatrix& w, const PackedActivations& x, int token_block,
                      std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                      std::size_t ldy) {
  gemm_dispatch<Avx512Micro<true>>(w, x, token_block, tile_begin, tile_end, y, ldy);
}

}  // namespace nanochat::kernels
