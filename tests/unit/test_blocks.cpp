// TQ2_0 / TQ1_0 / I2_S against byte vectors worked out from the formats' specification (ggml's
// quantize_row_tq{1,2}_0_ref and bitnet.cpp's quantize_i2_s, re-derived independently), plus the
// error paths.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::ternary {
namespace {

// Weight i is (i % 3) - 1: -1, 0, +1, -1, ...
std::vector<std::int8_t> pattern(std::size_t n) {
  std::vector<std::int8_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int8_t>(static_cast<int>(i % 3) - 1);
  return t;
}

std::vector<std::uint8_t> repeat3(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::size_t n) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(i % 3 == 0 ? a : (i % 3 == 1 ? b : c));
  return out;
}

TEST(Tq2_0, PatternMatchesKnownBytes) {
  // Byte m of each half packs weights h*128 + m + 32l in bits 2l: byte 0 holds weights
  // 0, 32, 64, 96 -> codes 0, 2, 1, 0 -> 0b00'01'10'00 = 0x18.
  std::vector<std::uint8_t> expected = repeat3(0x18, 0x61, 0x86, 64);
  expected.push_back(0x00);  // fp16(0.5) = 0x3800, little endian
  expected.push_back(0x38);
  std::vector<std::uint8_t> out(tq2_0_bytes(256));
  const float scale = 0.5f;
  encode_tq2_0(pattern(256), {&scale, 1}, out);
  EXPECT_EQ(out, expected);

  std::vector<std::int8_t> back(256);
  float d = 0;
  decode_tq2_0(out, back, {&d, 1});
  EXPECT_EQ(back, pattern(256));
  EXPECT_EQ(d, 0.5f);
}

TEST(Tq2_0, UniformBlocks) {
  for (const auto& [trit, byte] : {std::pair<int, int>{-1, 0x00}, {0, 0x55}, {1, 0xaa}}) {
    std::vector<std::int8_t> t(512, static_cast<std::int8_t>(trit));
    std::vector<float> scales = {1.0f, 2.0f};
    std::vector<std::uint8_t> out(tq2_0_bytes(512));
    encode_tq2_0(t, scales, out);
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t i = 0; i < 64; ++i) ASSERT_EQ(out[b * 66 + i], byte);
    }
    EXPECT_EQ(out[64], 0x00);  // fp16(1.0) = 0x3c00
    EXPECT_EQ(out[65], 0x3c);
    EXPECT_EQ(out[130], 0x00);  // fp16(2.0) = 0x4000
    EXPECT_EQ(out[131], 0x40);
  }
}

TEST(Tq2_0, CodeThreeIsRejected) {
  std::vector<std::uint8_t> bytes(66, 0x55);
  bytes[17] = 0xc0;  // weight 128*0 + 3*32 + 17 gets code 3
  std::vector<std::int8_t> t(256);
  float d = 0;
  EXPECT_THROW(decode_tq2_0(bytes, t, {&d, 1}), FormatError);
}

TEST(Tq1_0, PatternMatchesKnownBytes) {
  // qs[0] holds weights 0, 32, 64, 96, 128 -> digits 0 2 1 0 2 -> 65 -> ceil(65*256/243) = 69.
  std::vector<std::uint8_t> expected = repeat3(0x45, 0x6c, 0xcf, 32);
  const auto mid = repeat3(0x94, 0xbb, 0x31, 16);
  expected.insert(expected.end(), mid.begin(), mid.end());
  for (int b : {0x30, 0x92, 0xbb, 0x30, 0x00, 0x38})
    expected.push_back(static_cast<std::uint8_t>(b));
  std::vector<std::uint8_t> out(tq1_0_bytes(256));
  const float scale = 0.5f;
  encode_tq1_0(pattern(256), {&scale, 1}, out);
  EXPECT_EQ(out, expected);

  std::vector<std::int8_t> back(256);
  float d = 0;
  decode_tq1_0(out, back, {&d, 1});
  EXPECT_EQ(back, pattern(256));
  EXPECT_EQ(d, 0.5f);
}

TEST(Tq1_0, UniformBlocks) {
  // All zero: digits 11111 = 121 -> 128; qh 1111 * 3 = 120 -> 127.
  // All +1:   22222 = 242 -> 255;      qh 2222 * 3 = 240 -> 253.   All -1: 0 and 0.
  struct Case {
    int trit;
    std::uint8_t qs, qh;
  };
  for (const Case c : {Case{0, 128, 127}, Case{1, 255, 253}, Case{-1, 0, 0}}) {
    std::vector<std::int8_t> t(256, static_cast<std::int8_t>(c.trit));
    std::vector<std::uint8_t> out(54);
    const float scale = 1.0f;
    encode_tq1_0(t, {&scale, 1}, out);
    for (int i = 0; i < 48; ++i) ASSERT_EQ(out[i], c.qs) << "trit " << c.trit;
    for (int i = 48; i < 52; ++i) ASSERT_EQ(out[i], c.qh) << "trit " << c.trit;
  }
}

TEST(Tq1_0, EveryByteDecodesToTrits) {
  // Unlike TQ2_0 there is no invalid code: arbitrary bytes decode to values in {-1, 0, 1}.
  std::vector<std::uint8_t> bytes(54);
  for (int v = 0; v < 256; v += 1) {
    for (auto& b : bytes) b = static_cast<std::uint8_t>(v);
    std::vector<std::int8_t> t(256);
    float d = 0;
    decode_tq1_0(bytes, t, {&d, 1});
    for (auto x : t) ASSERT_TRUE(x >= -1 && x <= 1);
  }
}

TEST(I2_S, PatternMatchesKnownBytes) {
  // Weight j of a 128-group sits in byte j%32 at bits 6-2*(j/32): byte 0 holds weights 0, 32,
  // 64, 96 -> codes 0, 2, 1, 0 -> 0b00'10'01'00 = 0x24. The fp32 scale follows, then 28 zeros.
  std::vector<std::uint8_t> expected = repeat3(0x24, 0x49, 0x92, 32);
  for (int b : {0x00, 0x00, 0x80, 0x3e}) expected.push_back(static_cast<std::uint8_t>(b));  // 0.25f
  expected.resize(expected.size() + 28, 0);
  std::vector<std::uint8_t> out(i2_s_bytes(128));
  ASSERT_EQ(out.size(), 64u);
  encode_i2_s(pattern(128), 0.25f, out);
  EXPECT_EQ(out, expected);

  std::vector<std::int8_t> back(128);
  EXPECT_EQ(decode_i2_s(out, back), 0.25f);
  EXPECT_EQ(back, pattern(128));
}

// Bytes written by hand from bitnet.cpp's x86 quantize_i2_s (src/ggml-bitnet-mad.cpp, the
// ACT_PARALLEL branch include/gemm-config.h selects): codes 0/1/2 = -1/0/+1, the flattened tensor
// in 128-weight groups of 32 bytes, weight j of a group in byte j % 32 at bits 6 - 2 * (j / 32),
// then 32 bytes whose first four are the tensor's fp32 scale and the rest unused (llama-quantize
// leaves them as they were; anything goes).
TEST(I2_S, DecodesBitnetCppBytes) {
  std::vector<std::uint8_t> bytes(64, 0x55);  // two groups, every weight 0 (code 01)
  bytes[0] = 0x92;       // 0b10'01'00'10: weights 0, 32, 64, 96 = +1, 0, -1, +1
  bytes[32 + 5] = 0x24;  // 0b00'10'01'00: weights 133, 165, 197, 229 = -1, +1, 0, -1
  bytes[31] = 0x56;      // 0b01'01'01'10: weight 127 = +1
  for (int b : {0x00, 0x00, 0xc0, 0x3e}) bytes.push_back(static_cast<std::uint8_t>(b));  // 0.375f
  bytes.resize(bytes.size() + 28, 0xab);
  std::vector<std::int8_t> want(256, 0);
  want[0] = 1, want[64] = -1, want[96] = 1, want[127] = 1;
  want[133] = -1, want[165] = 1, want[229] = -1;
  std::vector<std::int8_t> got(256);
  EXPECT_EQ(decode_i2_s(bytes, got), 0.375f);
  EXPECT_EQ(got, want);
  // The weights alone (no trailer), from any offset, as the loader reads rows.
  std::vector<std::int8_t> row(128);
  decode_i2_s_range(std::span(bytes).first(64), 128, row);
  EXPECT_EQ(row, std::vector<std::int8_t>(want.begin() + 128, want.end()));
  // Without its trailer the tensor is too short to hold the scale.
  EXPECT_THROW(decode_i2_s(std::span(bytes).first(64), got), Error);
}

TEST(I2_S, CodeThreeIsRejected) {
  std::vector<std::uint8_t> bytes(i2_s_bytes(256), 0x55);
  bytes[40] = 0xff;
  std::vector<std::int8_t> t(256);
  EXPECT_THROW(decode_i2_s(bytes, t), FormatError);
}

TEST(Blocks, RowLengthsMustBeWholeBlocks) {
  EXPECT_THROW(tq2_0_bytes(255), FormatError);
  EXPECT_THROW(tq1_0_bytes(300), FormatError);
  EXPECT_THROW(i2_s_bytes(100), FormatError);
  EXPECT_EQ(tq2_0_bytes(2560), 10u * 66);
  EXPECT_EQ(tq1_0_bytes(2560), 10u * 54);
  EXPECT_EQ(i2_s_bytes(2560), 640u + 32);
  try {
    (void)tq2_0_bytes(100);
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("100"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos);
  }
}

TEST(Blocks, SizeMismatchesAndBadTritsAreErrors) {
  std::vector<std::int8_t> t(256, 0);
  std::vector<std::uint8_t> out(65);
  const float s = 1;
  EXPECT_THROW(encode_tq2_0(t, {&s, 1}, out), Error);
  t[3] = 2;
  std::vector<std::uint8_t> ok(66);
  EXPECT_THROW(encode_tq2_0(t, {&s, 1}, ok), FormatError);
}

}  // namespace
}  // namespace nanochat::ternary
