#include "nanochat/ternary/blocks.hpp"

#include <cstring>

#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::ternary {
namespace {

constexpr std::uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};

std::int64_t checked_blocks(std::int64_t n, std::int64_t block, const char* type) {
  if (n < 0 || n % block != 0) {
    fail<FormatError>("{} stores rows in blocks of {} weights, but the row has {} weights", type,
                      block, n);
  }
  return n / block;
}

void check_sizes(const char* type, std::size_t trits, std::size_t scales, std::size_t bytes,
                 std::size_t want_scales, std::size_t want_bytes) {
  if (scales != want_scales || bytes != want_bytes) {
    fail<Error>("{}: {} weights need {} scales and {} bytes, got {} and {}", type, trits,
                want_scales, want_bytes, scales, bytes);
  }
}

std::uint8_t code_of(std::int8_t trit) {
  if (trit < -1 || trit > 1) fail<FormatError>("ternary weight {} is not -1, 0 or +1", trit);
  return static_cast<std::uint8_t>(trit + 1);
}

// Packs `count` base-3 digits (most significant first) into one byte, as ggml stores them.
std::uint8_t pack_base3(const std::int8_t* trits, std::int64_t stride, int count, bool pad_digit) {
  unsigned q = 0;
  for (int n = 0; n < count; ++n) q = q * 3 + code_of(trits[n * stride]);
  if (pad_digit) q *= 3;  // qh bytes hold four digits shifted to the top
  return static_cast<std::uint8_t>((q * 256 + 242) / 243);
}

std::int8_t digit_of(std::uint8_t byte, int n) {
  const auto shifted = static_cast<std::uint8_t>(byte * kPow3[n]);
  return static_cast<std::int8_t>(((unsigned{shifted} * 3) >> 8) - 1);
}

}  // namespace

std::size_t tq2_0_bytes(std::int64_t n) {
  return static_cast<std::size_t>(checked_blocks(n, kQkK, "TQ2_0")) * kTq2BlockBytes;
}
std::size_t tq1_0_bytes(std::int64_t n) {
  return static_cast<std::size_t>(checked_blocks(n, kQkK, "TQ1_0")) * kTq1BlockBytes;
}
std::size_t i2_s_bytes(std::int64_t n) {
  return static_cast<std::size_t>(checked_blocks(n, kI2sBlock, "I2_S")) * (kI2sBlock / 4) +
         kI2sTrailerBytes;
}

void encode_tq2_0(std::span<const std::int8_t> trits, std::span<const float> block_scales,
                  std::span<std::uint8_t> out) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t nb = tq2_0_bytes(n) / kTq2BlockBytes;
  check_sizes("TQ2_0", trits.size(), block_scales.size(), out.size(), nb, nb * kTq2BlockBytes);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::int8_t* x = trits.data() + b * kQkK;
    std::uint8_t* block = out.data() + b * kTq2BlockBytes;
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 32; ++m) {
        unsigned q = 0;
        for (int l = 0; l < 4; ++l) q |= unsigned{code_of(x[h * 128 + l * 32 + m])} << (2 * l);
        block[h * 32 + m] = static_cast<std::uint8_t>(q);
      }
    }
    const std::uint16_t d = fp32_to_fp16(block_scales[b]);
    std::memcpy(block + 64, &d, 2);
  }
}

void decode_tq2_0(std::span<const std::uint8_t> in, std::span<std::int8_t> trits,
                  std::span<float> block_scales) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t nb = tq2_0_bytes(n) / kTq2BlockBytes;
  check_sizes("TQ2_0", trits.size(), block_scales.size(), in.size(), nb, nb * kTq2BlockBytes);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::uint8_t* block = in.data() + b * kTq2BlockBytes;
    std::int8_t* x = trits.data() + b * kQkK;
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 32; ++m) {
        const unsigned byte = block[h * 32 + m];
        for (int l = 0; l < 4; ++l) {
          const unsigned code = (byte >> (2 * l)) & 3u;
          if (code == 3) {
            fail<FormatError>(
                "TQ2_0 block {} holds the 2-bit code 3, which is not a ternary "
                "weight; the tensor data is corrupt",
                b);
          }
          x[h * 128 + l * 32 + m] = static_cast<std::int8_t>(static_cast<int>(code) - 1);
        }
      }
    }
    std::uint16_t d = 0;
    std::memcpy(&d, block + 64, 2);
    block_scales[b] = fp16_to_fp32(d);
  }
}

void encode_tq1_0(std::span<const std::int8_t> trits, std::span<const float> block_scales,
                  std::span<std::uint8_t> out) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t nb = tq1_0_bytes(n) / kTq1BlockBytes;
  check_sizes("TQ1_0", trits.size(), block_scales.size(), out.size(), nb, nb * kTq1BlockBytes);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::int8_t* x = trits.data() + b * kQkK;
    std::uint8_t* qs = out.data() + b * kTq1BlockBytes;
    std::uint8_t* qh = qs + 48;
    // Weights 0..159: 32 bytes, digit n of byte m is weight n*32 + m.
    for (int m = 0; m < 32; ++m) qs[m] = pack_base3(x + m, 32, 5, false);
    // Weights 160..239: 16 bytes, digit n of byte m is weight 160 + n*16 + m.
    for (int m = 0; m < 16; ++m) qs[32 + m] = pack_base3(x + 160 + m, 16, 5, false);
    // Weights 240..255: 4 bytes of four digits, digit n of byte j is weight 240 + n*4 + j.
    for (int j = 0; j < 4; ++j) qh[j] = pack_base3(x + 240 + j, 4, 4, true);
    const std::uint16_t d = fp32_to_fp16(block_scales[b]);
    std::memcpy(qs + 52, &d, 2);
  }
}

void decode_tq1_0(std::span<const std::uint8_t> in, std::span<std::int8_t> trits,
                  std::span<float> block_scales) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t nb = tq1_0_bytes(n) / kTq1BlockBytes;
  check_sizes("TQ1_0", trits.size(), block_scales.size(), in.size(), nb, nb * kTq1BlockBytes);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::uint8_t* qs = in.data() + b * kTq1BlockBytes;
    const std::uint8_t* qh = qs + 48;
    std::int8_t* x = trits.data() + b * kQkK;
    for (int d = 0; d < 5; ++d) {
      for (int m = 0; m < 32; ++m) x[d * 32 + m] = digit_of(qs[m], d);
    }
    for (int d = 0; d < 5; ++d) {
      for (int m = 0; m < 16; ++m) x[160 + d * 16 + m] = digit_of(qs[32 + m], d);
    }
    for (int d = 0; d < 4; ++d) {
      for (int j = 0; j < 4; ++j) x[240 + d * 4 + j] = digit_of(qh[j], d);
    }
    std::uint16_t scale = 0;
    std::memcpy(&scale, qs + 52, 2);
    block_scales[b] = fp16_to_fp32(scale);
  }
}

void encode_i2_s(std::span<const std::int8_t> trits, float scale, std::span<std::uint8_t> out) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t bytes = i2_s_bytes(n);
  check_sizes("I2_S", trits.size(), 1, out.size(), 1, bytes);
  std::memset(out.data(), 0, out.size());
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t block = i / kI2sBlock;
    const std::int64_t j = i % kI2sBlock;
    const unsigned shift = static_cast<unsigned>(6 - 2 * (j / 32));
    out[static_cast<std::size_t>(block * 32 + j % 32)] |=
        static_cast<std::uint8_t>(code_of(trits[static_cast<std::size_t>(i)]) << shift);
  }
  std::memcpy(out.data() + n / 4, &scale, sizeof(float));
}

void decode_i2_s_range(std::span<const std::uint8_t> in, std::int64_t first,
                       std::span<std::int8_t> trits) {
  const auto n = static_cast<std::int64_t>(trits.size());
  if (first < 0 || static_cast<std::size_t>(first + n) > in.size() * 4) {
    fail<InternalError>("I2_S: weights {} to {} lie outside a tensor of {} bytes", first, first + n,
                        in.size());
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t block = (first + i) / kI2sBlock;
    const std::int64_t j = (first + i) % kI2sBlock;
    const unsigned shift = static_cast<unsigned>(6 - 2 * (j / 32));
    const unsigned code = (in[static_cast<std::size_t>(block * 32 + j % 32)] >> shift) & 3u;
    if (code == 3) {
      fail<FormatError>(
          "I2_S group {} holds the 2-bit code 3, which is not a ternary weight; "
          "the tensor data is corrupt",
          block);
    }
    trits[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(static_cast<int>(code) - 1);
  }
}

float decode_i2_s(std::span<const std::uint8_t> in, std::span<std::int8_t> trits) {
  const auto n = static_cast<std::int64_t>(trits.size());
  const std::size_t bytes = i2_s_bytes(n);
  check_sizes("I2_S", trits.size(), 1, in.size(), 1, bytes);
  decode_i2_s_range(in, 0, trits);
  float scale = 0;
  std::memcpy(&scale, in.data() + n / 4, sizeof(float));
  return scale;
}

}  // namespace nanochat::ternary
