// Block-quantized heads, reference: each block's exact int32 sums (kquant.hpp), fp32 across
// blocks in block order.
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

// Q4_K and Q5_K (kFive): Q5_K's fifth bit of value l of sub-block j is bit j of qh[l].
template <bool kFive>
void k_with_min(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
                std::size_t ldy) {
  constexpr std::int64_t kBytes = kFive ? 176 : 144;
  const std::int64_t blocks = w.cols / 256;
  for (std::int64_t b = b0; b < b1; ++b) {
    const std::int8_t* xb = x.token(b);
    const std::int32_t* x32 = sums.sums32(b);
    for (std::int64_t r = begin; r < end; ++r) {
      const std::uint8_t* row = w.data.data() + r * w.row_bytes;
      float acc = 0;
      for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const std::uint8_t* block = row + blk * kBytes;
        std::uint8_t sc[8], mn[8];
        q4_k_scales(block + 4, sc, mn);
        const std::uint8_t* qh = block + 16;
        const std::uint8_t* qs = block + (kFive ? 48 : 16);
        const std::int8_t* xv = xb + blk * 256;
        std::int32_t a = 0, m = 0;
        for (int g = 0; g < 4; ++g) {  // 64 weights: 32 low nibbles, then 32 high ones
          std::int32_t lo = 0, hi = 0;
          for (int l = 0; l < 32; ++l) {
            const int h_lo = kFive ? ((qh[l] >> (2 * g)) & 1) << 4 : 0;
            const int h_hi = kFive ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0;
            lo += ((qs[g * 32 + l] & 0x0F) | h_lo) * xv[g * 64 + l];
            hi += ((qs[g * 32 + l] >> 4) | h_hi) * xv[g * 64 + 32 + l];
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

// Q5's 32 fifth bits (bit i of the little-endian word at qh) as bytes of 0 or 16 in value
// order, eight at a time by 64-bit arithmetic: each byte of b * 0x0101... keeps its own bit
// (mask 0x8040...), and adding 0x7f sets that byte's top bit when it is not zero. Their products
// are summed in a loop of their own. (Shifting the word by each value's index inside the nibble
// loop kept it from vectorizing: a 2B Q5_0 head took 356 ms per token at one thread, 199 ms now;
// Q4_0 takes 37 ms.)
void fifth_bits(const std::uint8_t* qh, std::uint8_t out[32]) {
  for (int byte = 0; byte < 4; ++byte) {
    const std::uint64_t spread = (qh[byte] * 0x0101010101010101ull) & 0x8040201008040201ull;
    const std::uint64_t set = ((spread + 0x7f7f7f7f7f7f7f7full) | spread) & 0x8080808080808080ull;
    const std::uint64_t sixteen = set >> 3;
    std::memcpy(out + 8 * byte, &sixteen, 8);
  }
}

// The 32-weight types: nibble byte l holds values l (low) and l + 16 (high); Q5's fifth bit of
// value i is bit i of the 32-bit qh. Q4_0 / Q5_0 subtract 8 / 16 * the block's activation sum in
// int32; Q4_1 / Q5_1 add m * that sum in fp32.
template <KQuantType kType>
void block32(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
             std::int64_t b0, std::int64_t b1, std::int64_t begin, std::int64_t end, float* y,
             std::size_t ldy) {
  constexpr bool kFive = kType == KQuantType::kQ5_0 || kType == KQuantType::kQ5_1;
  constexpr bool kMin = kType == KQuantType::kQ4_1 || kType == KQuantType::kQ5_1;
  constexpr std::int64_t kQh = kMin ? 4 : 2, kQs = kQh + (kFive ? 4 : 0), kBytes = kQs + 16;
  constexpr std::int32_t kOffset = kMin ? 0 : kFive ? 16 : 8;
  const std::int64_t blocks = w.cols / 32;
  for (std::int64_t b = b0; b < b1; ++b) {
    const std::int8_t* xb = x.token(b);
    const std::int32_t* x32 = sums.sums32(b);
    for (std::int64_t r = begin; r < end; ++r) {
      const std::uint8_t* row = w.data.data() + r * w.row_bytes;
      float acc = 0;
      for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const std::uint8_t* block = row + blk * kBytes;
        std::uint8_t high[32] = {};  // 16 where value i's fifth bit is set
        if (kFive) fifth_bits(block + kQh, high);
        const std::uint8_t* qs = block + kQs;
        const std::int8_t* xv = xb + blk * 32;
        std::int32_t a = 0;
        for (int l = 0; l < 16; ++l) a += (qs[l] & 0x0F) * xv[l] + (qs[l] >> 4) * xv[l + 16];
        if (kFive) {
          for (int i = 0; i < 32; ++i) a += high[i] * xv[i];
        }
        if (kMin) {
          acc += fp16_at(block) * static_cast<float>(a) +
                 fp16_at(block + 2) * static_cast<float>(x32[blk]);
        } else {
          acc += fp16_at(block) * static_cast<float>(a - kOffset * x32[blk]);
        }
      }
      y[static_cast<std::size_t>(b) * ldy + static_cast<std::size_t>(r)] =
          acc * x.scales[static_cast<std::size_t>(b)];
    }
  }
}

}  // namespace

KQuantFn kquant_scalar(KQuantType type) {
  switch (type) {
    case KQuantType::kQ4_0:
      return block32<KQuantType::kQ4_0>;
    case KQuantType::kQ4_1:
      return block32<KQuantType::kQ4_1>;
    case KQuantType::kQ5_0:
      return block32<KQuantType::kQ5_0>;
    case KQuantType::kQ5_1:
      return block32<KQuantType::kQ5_1>;
    case KQuantType::kQ4_K:
      return k_with_min<false>;
    case KQuantType::kQ5_K:
      return k_with_min<true>;
    case KQuantType::kQ6_K:
      break;
  }
  return q6_k;
}

}  // namespace nanochat::kernels
