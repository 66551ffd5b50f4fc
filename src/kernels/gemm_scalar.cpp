// Scalar reference kernel: decodes each 2-bit code back to a trit and multiplies, with no offset
// trick, so it is an independent check of the SIMD kernels. Built with baseline flags.
#include <cstdint>

#include "nanochat/kernels/registry.hpp"
#include "tile_driver.hpp"

namespace nanochat::kernels {
namespace {

struct ScalarMicro {
  template <int R, int NB>
  static void run(const std::uint8_t* tile, std::int64_t chunks, const std::int8_t* const (&x)[NB],
                  const std::int32_t (&)[NB], std::int32_t (&out)[R][NB]) {
    for (int r = 0; r < R; ++r) {
      for (int b = 0; b < NB; ++b) {
        std::int32_t acc = 0;
        for (std::int64_t c = 0; c < chunks; ++c) {
          const std::uint8_t* bytes = tile + (c * R + r) * kChunkBytes;  // kTq2 order
          const std::int8_t* xc = x[b] + c * kChunk;
          for (int h = 0; h < 2; ++h) {
            for (int l = 0; l < 4; ++l) {
              for (int m = 0; m < 32; ++m) {
                const int trit = ((bytes[h * 32 + m] >> (2 * l)) & 3) - 1;
                acc += trit * xc[h * 128 + l * 32 + m];
              }
            }
          }
        }
        out[r][b] = acc;
      }
    }
  }
};

void gemm(const PackedMatrix& w, const PackedActivations& x, int token_block,
          std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  gemm_dispatch<ScalarMicro>(w, x, token_block, tile_begin, tile_end, y, ldy);
}

std::uint64_t read_probe(const std::uint8_t* data, std::size_t bytes) {
  const auto* words = reinterpret_cast<const std::uint64_t*>(data);
  std::uint64_t a = 0, b = 0, c = 0, d = 0;
  for (std::size_t i = 0; i < bytes / 8; i += 4) {
    a += words[i];
    b += words[i + 1];
    c += words[i + 2];
    d += words[i + 3];
  }
  return a + b + c + d;
}

constexpr int kTileRows[] = {1};
constexpr int kTokenBlocks[] = {1};

}  // namespace

const KernelInfo& scalar_kernel() {
  static const KernelInfo info{Isa::kScalar, "scalar",   Layout::kTq2, kTileRows,    kTokenBlocks,
                               gemm,         read_probe, one_variant,  plain_variant};
  return info;
}

}  // namespace nanochat::kernels
