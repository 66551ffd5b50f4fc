// K-quant heads, reference: each block's exact int32 sums (kquant.hpp), fp32 across blocks in
// block order.
#include <cstdint>
#include <cstring>

#include "nanochat/kernels/kquant.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {
namespace {

void q6_k(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
          std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
          std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  for (std::int64_t b = b0; b < b1; ++b) {
    const std::int8_t* xb = x.token(b);
    const std::int16_t* x16 = sums.sums16(b);
    for (std::int64_t r = begin; r < end; ++r) {
      const std::uint8_t* row = w.data.data() + r * w.row_bytes;
      float acc = 0;
      for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const std::uint8_t* ql = row + blk * 210;
        const std::uint8_t* qh = ql + 128;
        const auto* sc = reinterpret_cast<const std::int8_t*>(ql + 192);
        const std::int8_t* xv = xb + blk * 256;
        // Sub-block j: 16 weights of group g (32 weights) of half h, whose low nibbles are in
        // ql's low (g < 2) or high (g >= 2) half-bytes and whose top two bits are bits 2g, 2g + 1
        // of qh.
        std::int32_t dot[16];
        for (int j = 0; j < 16; ++j) {
          const int h = j / 8, g = (j % 8) / 2, l0 = (j % 2) * 16;
          const std::uint8_t* lo = ql + h * 64 + (g % 2) * 32 + l0;
          const std::uint8_t* hi = qh + h * 32 + l0;
          const std::int8_t* xs = xv + h * 128 + g * 32 + l0;
          const int nibble = g >= 2 ? 4 : 0, top = 2 * g;
          std::int32_t sum = 0;
          for (int l = 0; l < 16; ++l) {
            sum += (((lo[l] >> nibble) & 0x0F) | (((hi[l] >> top) & 3) << 4)) * xs[l];
          }
          dot[j] = sum;
        }
        std::int32_t a = 0;
        for (int j = 0; j < 16; ++j) a += sc[j] * (dot[j] - 32 * x16[blk * 16 + j]);
        acc += fp16_at(ql + 208) * static_cast<float>(a);
      }
      y[static_cast<std::size_t>(b) * ldy + static_cast<std::size_t>(r)] =
          acc * x.scales[static_cast<std::size_t>(b)];
    }
  }
}

void q4_k(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
          std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
          std::size_t ldy) {
  const std::int64_t blocks = w.cols / 256;
  for (std::int64_t b = b0; b < b1; ++b) {
    const std::int8_t* xb = x.token(b);
    const std::int32_t* x32 = sums.sums32(b);
    for (std::int64_t r = begin; r < end; ++r) {
      const std::uint8_t* row = w.data.data() + r * w.row_bytes;
      float acc = 0;
      for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const std::uint8_t* block = row + blk * 144;
        std::uint8_t sc[8], mn[8];
        q4_k_scales(block + 4, sc, mn);
        const std::uint8_t* qs = block + 16;
        const std::int8_t* xv = xb + blk * 256;
        std::int32_t a = 0, m = 0;
        for (int g = 0; g < 4; ++g) {  // 64 weights: 32 low nibbles, then 32 high ones
          std::int32_t lo = 0, hi = 0;
          for (int l = 0; l < 32; ++l) {
            lo += (qs[g * 32 + l] & 0x0F) * xv[g * 64 + l];
            hi += (qs[g * 32 + l] >> 4) * xv[g * 64 + 32 + l];
          }
          a += sc[2 * g] * lo + sc[2 * g + 1] * hi;
          m += mn[2 * g] * x32[blk * 8 + 2 * g] + mn[2 * g + 1] * x32[blk * 8 + 2 * g + 1];
        }
        acc += fp16_at(block) * static_cast<float>(a) - fp16_at(block + 2) * static_cast<float>(m);
      }
      y[static_cast<std::size_t>(b) * ldy + static_cast<std::size_t>(r)] =
          acc * x.scales[static_cast<std::size_t>(b)];
    }
  }
}

}  // namespace

KQuantFn kquant_scalar(KQuantType type) { return type == KQuantType::kQ4_K ? q4_k : q6_k; }

}  // namespace nanochat::kernels
