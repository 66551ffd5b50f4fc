// The AVX2 micro-kernel with AVX-VNNI's vpdpbusd (compiled with -mavxvnni; gemm_avx2.cpp only
// calls it on CPUs that have AVX-VNNI).
#include "avx2_micro.hpp"

namespace nanochat::kernels {

void gemm_avx2_vnni(const PackedMatrix& w, const PackedActivations& x, int token_block,
                    std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                    std::size_t ldy) {
  gemm_dispatch<Avx2Micro<true>>(w, x, token_block, tile_begin, tile_end, y, ldy);
}

}  // namespace nanochat::kernels
