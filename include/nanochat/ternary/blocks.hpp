// On-disk ternary block formats, bit-exact with ggml and bitnet.cpp:
//
//  TQ2_0 (ggml type 35): 256 weights in 66 bytes = qs[64] + fp16 d. Byte h*32+m of qs holds, in
//        bits 2l..2l+1, the code (q+1) of weight h*128 + l*32 + m (h in 0..1, l in 0..3).
//  TQ1_0 (ggml type 34): 256 weights in 54 bytes = qs[48] + qh[4] + fp16 d. Weights are base-3
//        digits packed five per byte (four in qh) and stored as ceil(v * 256 / 243), so that the
//        n-th digit is recovered as ((uint8_t)(byte * 3^n) * 3) >> 8.
//  I2_S  (bitnet.cpp type 36, x86 layout): 128 weights in 32 bytes; weight j of a block sits in
//        byte j%32 at bits 6-2*(j/32); codes 0,1,2 mean -1,0,+1. One fp32 scale for the whole
//        tensor follows the packed bytes, and the tensor occupies n/4 + 32 bytes.
//
// "Trits" below are int8 values in {-1, 0, +1}. Row lengths must be a multiple of the block
// size: a ggml block cannot describe a partial row, so other lengths are rejected with an error
// rather than padded silently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace nanochat::ternary {

inline constexpr std::int64_t kQkK = 256;  // weights per TQ1_0 / TQ2_0 block
inline constexpr std::size_t kTq2BlockBytes = 66;
inline constexpr std::size_t kTq1BlockBytes = 54;
inline constexpr std::int64_t kI2sBlock = 128;  // weights per I2_S packing group
inline constexpr std::size_t kI2sTrailerBytes = 32;

// Bytes of `n` weights; throw FormatError when n is not a multiple of the block size.
std::size_t tq2_0_bytes(std::int64_t n);
std::size_t tq1_0_bytes(std::int64_t n);
std::size_t i2_s_bytes(std::int64_t n);

// Encoders: trits.size() == n (a multiple of 256), block_scales.size() == n / 256, out.size() ==
// tqX_0_bytes(n). Scales are stored as fp16. Throws FormatError on a trit outside {-1,0,1}.
void encode_tq2_0(std::span<const std::int8_t> trits, std::span<const float> block_scales,
                  std::span<std::uint8_t> out);
void encode_tq1_0(std::span<const std::int8_t> trits, std::span<const float> block_scales,
                  std::span<std::uint8_t> out);
void encode_i2_s(std::span<const std::int8_t> trits, float scale, std::span<std::uint8_t> out);

// Decoders: the inverse. TQ2_0 and I2_S have a fourth 2-bit code (3) that is not a ternary
// value; it is rejected with FormatError naming the block. Every TQ1_0 byte decodes.
void decode_tq2_0(std::span<const std::uint8_t> in, std::span<std::int8_t> trits,
                  std::span<float> block_scales);
void decode_tq1_0(std::span<const std::uint8_t> in, std::span<std::int8_t> trits,
                  std::span<float> block_scales);
// Returns the tensor scale.
float decode_i2_s(std::span<const std::uint8_t> in, std::span<std::int8_t> trits);
// Weights [first, first + trits.size()) of an I2_S tensor whose bytes (trailer optional) are `in`:
// one row at a time, for repacking at load.
void decode_i2_s_range(std::span<const std::uint8_t> in, std::int64_t first,
                       std::span<std::int8_t> trits);

}  // namespace nanochat::ternary
