// Block-quantized head kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) on every ISA the host
// has against ggml's dequantized values (gguf::dequantize, itself checked bit for bit against
// gguf-py) in double precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "nanochat/gguf/dequant.hpp"
#include "nanochat/gguf/types.hpp"
#include "nanochat/kernels/kquant.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {
namespace {

// Where a block's fp16 scale d is, and its second fp16 (dmin or m; -1 for none): written here
// from ggml's block structs, not read from the library's table.
int d_at(KQuantType type) { return type == KQuantType::kQ6_K ? 208 : 0; }
int second_at(KQuantType type) {
  switch (type) {
    case KQuantType::kQ4_1:
    case KQuantType::kQ5_1:
    case KQuantType::kQ4_K:
    case KQuantType::kQ5_K:
      return 2;
    default:
      return -1;
  }
}

// Random blocks: every quant and scale byte random (all bit patterns of the fields), d and the
// second scale positive fp16 values (Q4_1 / Q5_1's m of either sign).
std::vector<std::uint8_t> random_blocks(KQuantType type, std::int64_t blocks, std::mt19937& rng) {
  const auto bytes = static_cast<std::size_t>(kquant_block_bytes(type));
  std::vector<std::uint8_t> data(static_cast<std::size_t>(blocks) * bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.0005f, 0.02f);
  for (auto& v : data) v = static_cast<std::uint8_t>(byte(rng));
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::uint8_t* p = data.data() + static_cast<std::size_t>(b) * bytes;
    const std::uint16_t d = fp32_to_fp16(scale(rng));
    const bool signed_min = type == KQuantType::kQ4_1 || type == KQuantType::kQ5_1;
    const std::uint16_t second = fp32_to_fp16(scale(rng) * (signed_min && b % 2 == 1 ? -8 : 1));
    std::memcpy(p + d_at(type), &d, 2);
    if (second_at(type) >= 0) std::memcpy(p + second_at(type), &second, 2);
  }
  return data;
}

const char* name(KQuantType type) { return kquant_name(type); }

// The table agrees with ggml's: type ids, block sizes and bytes.
TEST(KQuant, TypesMatchGgml) {
  for (const KQuantType type : kKQuantTypes) {
    const auto info = gguf::tensor_type_info(kquant_ggml_type(type), "");
    ASSERT_TRUE(info.has_value()) << name(type);
    EXPECT_EQ(info->name, std::string(name(type)));
    EXPECT_EQ(info->block, kquant_block_weights(type)) << name(type);
    EXPECT_EQ(info->block_bytes, kquant_block_bytes(type)) << name(type);
    KQuantType back{};
    ASSERT_TRUE(kquant_from_ggml(kquant_ggml_type(type), back)) << name(type);
    EXPECT_EQ(back, type);
  }
  KQuantType none{};
  for (const std::uint32_t other : {0u, 1u, 8u, 10u, 11u, 15u, 34u, 35u}) {
    EXPECT_FALSE(kquant_from_ggml(other, none)) << other;
  }
}

TEST(KQuant, EveryIsaMatchesGgmlDequantization) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> xq(-128, 127);
  for (const KQuantType type : kKQuantTypes) {
    std::vector<std::tuple<int, int, int>> shapes = {{1, 256, 1}, {7, 512, 2},  {33, 2560, 3},
                                                     {5, 768, 4}, {9, 1024, 7}, {64, 256, 9}};
    if (kquant_block_weights(type) == 32) {  // rows with 1-3 blocks past the last group of four
      shapes.insert(shapes.end(), {{3, 32, 2}, {4, 96, 3}, {6, 224, 5}, {2, 2592, 6}});
    }
    for (const auto& [rows, cols, tokens] : shapes) {
      const int per_block = static_cast<int>(kquant_block_weights(type));
      const std::vector<std::uint8_t> blocks = random_blocks(type, rows * cols / per_block, rng);
      std::vector<float> dq(static_cast<std::size_t>(rows * cols));
      gguf::dequantize(kquant_ggml_type(type), blocks, 0, dq);
      std::vector<std::int8_t> x(static_cast<std::size_t>(tokens * cols));
      for (auto& v : x) v = static_cast<std::int8_t>(xq(rng));
      PackedActivations acts;
      pack_activations_i8(x.data(), tokens, cols, acts);
      for (std::size_t t = 0; t < acts.scales.size(); ++t)
        acts.scales[t] = 0.25f + 0.5f * static_cast<float>(t);
      ThreadPool one_thread(1);
      const KQuantMatrix m = pack_kquant(type, blocks, rows, cols, one_thread);
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
        if (!isa_supported(isa, cpu_info().features)) continue;
        for (int threads : {1, 2}) {
          ThreadPool pool(threads);
          std::vector<float> y(static_cast<std::size_t>(tokens * rows));
          kquant_matmul(m, acts, isa, pool, y.data(), static_cast<std::size_t>(rows));
          for (int b = 0; b < tokens; ++b) {
            for (int r = 0; r < rows; ++r) {
              double want = 0, magnitude = 0;
              for (int i = 0; i < cols; ++i) {
                const double p = static_cast<double>(dq[static_cast<std::size_t>(r) * cols + i]) *
                                 x[static_cast<std::size_t>(b) * cols + i];
                want += p;
                magnitude += std::fabs(p);
              }
              want *= acts.scales[static_cast<std::size_t>(b)];
              magnitude *= acts.scales[static_cast<std::size_t>(b)];
              EXPECT_NEAR(y[static_cast<std::size_t>(b * rows + r)], want, 2e-6 * magnitude + 1e-6)
                  << name(type) << " " << isa_name(isa) << " " << rows << "x" << cols << " token "
                  << b << " row " << r;
            }
          }
          // Each token alone gives bit for bit what it gave beside the others.
          for (int b = 0; b < tokens; ++b) {
            PackedActivations alone_acts;
            pack_activations_i8(x.data() + static_cast<std::size_t>(b) * cols, 1, cols, alone_acts);
            alone_acts.scales[0] = acts.scales[static_cast<std::size_t>(b)];
            std::vector<float> alone(static_cast<std::size_t>(rows));
            kquant_matmul(m, alone_acts, isa, pool, alone.data(), static_cast<std::size_t>(rows));
            EXPECT_TRUE(std::equal(alone.begin(), alone.end(),
                                   y.begin() + static_cast<std::ptrdiff_t>(b * rows)))
                << name(type) << " " << isa_name(isa) << " token " << b << " of " << tokens;
          }
        }
      }
    }
  }
}

// The extreme fields: all quants at their largest and the activations at -128 / 127, where an
// int16 or int32 intermediate would overflow first (an overflow is off by far more than fp32's
// rounding of sums beyond 2^24).
TEST(KQuant, ExtremeValuesStayExact) {
  for (const KQuantType type : kKQuantTypes) {
    for (const int fill : {0x00, 0xFF}) {
      for (const int xv : {-128, 127}) {
        // 19 blocks of 32: four groups of four and three more.
        const int cols = kquant_block_weights(type) == 32 ? 608 : 512;
        const int blocks_n = cols / static_cast<int>(kquant_block_weights(type));
        std::vector<std::uint8_t> blocks(
            static_cast<std::size_t>(blocks_n * kquant_block_bytes(type)),
            static_cast<std::uint8_t>(fill));
        for (int b = 0; b < blocks_n; ++b) {
          std::uint8_t* p = blocks.data() + b * kquant_block_bytes(type);
          const std::uint16_t one = fp32_to_fp16(1.0f);
          std::memcpy(p + d_at(type), &one, 2);
          if (second_at(type) >= 0) std::memcpy(p + second_at(type), &one, 2);
        }
        std::vector<float> dq(static_cast<std::size_t>(cols));
        gguf::dequantize(kquant_ggml_type(type), blocks, 0, dq);
        double want = 0;
        for (const float v : dq) want += static_cast<double>(v) * xv;
        const std::vector<std::int8_t> x(static_cast<std::size_t>(cols),
                                         static_cast<std::int8_t>(xv));
        PackedActivations acts;
        pack_activations_i8(x.data(), 1, cols, acts);
        ThreadPool pool(1);
        const KQuantMatrix m = pack_kquant(type, blocks, 1, cols, pool);
        for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
          if (!isa_supported(isa, cpu_info().features)) continue;
          float y = 0;
          kquant_matmul(m, acts, isa, pool, &y, 1);
          EXPECT_NEAR(y, want, 1e-6 * std::fabs(want))
              << name(type) << " " << isa_name(isa) << " fill " << fill << " x " << xv;
        }
      }
    }
  }
}

// The plain quantizer that `model random` writes K-quant tensors with: ggml's dequantization of
// its blocks gives the values back to within the formats' resolution.
TEST(KQuant, QuantizerRoundTripsThroughGgmlDequantization) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(4096);
  for (auto& v : x) v = normal(rng);
  x[100] = 0;  // a sub-block of zeros, and a large value
  x[777] = 9.0f;
  std::fill(x.begin() + 512, x.begin() + 544, 0.0f);
  for (const auto& [type, tolerance, at_nine] :
       std::vector<std::tuple<KQuantType, double, double>>{{KQuantType::kQ6_K, 0.03, 0.2},
                                                           {KQuantType::kQ4_K, 0.15, 0.7},
                                                           {KQuantType::kQ5_K, 0.08, 0.4},
                                                           {KQuantType::kQ4_0, 0.15, 0.05},
                                                           {KQuantType::kQ4_1, 0.15, 0.05},
                                                           {KQuantType::kQ5_0, 0.08, 0.05},
                                                           {KQuantType::kQ5_1, 0.08, 0.05}}) {
    std::vector<std::uint8_t> blocks(x.size() /
                                     static_cast<std::size_t>(kquant_block_weights(type)) *
                                     static_cast<std::size_t>(kquant_block_bytes(type)));
    quantize_row_kquant(type, x, blocks);
    std::vector<float> back(x.size());
    gguf::dequantize(kquant_ggml_type(type), blocks, 0, back);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      err += (back[i] - x[i]) * (back[i] - x[i]);
      norm += x[i] * x[i];
    }
    EXPECT_LT(std::sqrt(err / norm), tolerance) << name(type);
    EXPECT_NEAR(back[777], 9.0f, at_nine) << name(type);
    for (int i = 512; i < 544; ++i)
      EXPECT_NEAR(back[static_cast<std::size_t>(i)], 0.0f, 0.02) << name(type);
  }
  std::vector<std::uint8_t> small(100);
  EXPECT_THROW(quantize_row_kquant(KQuantType::kQ6_K, x, small), Error);
  EXPECT_THROW(quantize_row_kquant(KQuantType::kQ4_0, std::span(x).first(48), small), Error);
}

TEST(KQuant, Q4KScalesFollowGgml) {
  // Every 6-bit field at a distinct value, packed as ggml's get_scale_min_k4 reads them.
  std::uint8_t want_scale[8], want_min[8];
  for (int j = 0; j < 8; ++j) {
    want_scale[j] = static_cast<std::uint8_t>(5 * j + 3);
    want_min[j] = static_cast<std::uint8_t>(63 - 7 * j);
  }
  std::uint8_t packed[12] = {};
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<std::uint8_t>(want_scale[j] | ((want_scale[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<std::uint8_t>(want_min[j] | ((want_min[j + 4] >> 4) << 6));
    packed[j + 8] =
        static_cast<std::uint8_t>((want_scale[j + 4] & 0x0F) | ((want_min[j + 4] & 0x0F) << 4));
  }
  std::uint8_t scale[8], mins[8];
  q4_k_scales(packed, scale, mins);
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(scale[j], want_scale[j]) << j;
    EXPECT_EQ(mins[j], want_min[j]) << j;
  }
}

TEST(KQuant, BadInputIsAnError) {
  ThreadPool pool(1);
  std::vector<std::uint8_t> blocks(210);
  EXPECT_THROW(pack_kquant(KQuantType::kQ6_K, blocks, 1, 128, pool), FormatError);
  EXPECT_THROW(pack_kquant(KQuantType::kQ6_K, blocks, 2, 256, pool), FormatError);
  const std::uint16_t inf = 0x7c00;
  std::memcpy(blocks.data() + 208, &inf, 2);
  try {
    pack_kquant(KQuantType::kQ6_K, blocks, 1, 256, pool);
    ADD_FAILURE() << "an infinite block scale was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("row 0"), std::string::npos) << e.what();
  }
  std::vector<std::uint8_t> q4(144 * 2, 0);
  std::memcpy(q4.data() + 144 + 2, &inf, 2);  // the second row's dmin
  try {
    pack_kquant(KQuantType::kQ4_K, q4, 2, 256, pool);
    ADD_FAILURE() << "an infinite dmin was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
  // The 32-weight types: rows of whole 32-weight blocks only; an infinite or NaN d, or Q4_1 /
  // Q5_1's m, named by the lowest row that has one.
  std::vector<std::uint8_t> q4_0(18 * 3 * 2, 0);
  EXPECT_THROW(pack_kquant(KQuantType::kQ4_0, q4_0, 2, 48, pool), FormatError);
  EXPECT_NO_THROW(pack_kquant(KQuantType::kQ4_0, q4_0, 2, 96, pool));
  const std::uint16_t nan = 0x7e00;
  std::memcpy(q4_0.data() + 18 * 5, &nan, 2);  // row 1's last block
  try {
    pack_kquant(KQuantType::kQ4_0, q4_0, 2, 96, pool);
    ADD_FAILURE() << "a NaN Q4_0 scale was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
  for (const KQuantType type :
       {KQuantType::kQ4_1, KQuantType::kQ5_1, KQuantType::kQ5_0, KQuantType::kQ5_K}) {
    const std::int64_t bytes = kquant_block_bytes(type);
    std::vector<std::uint8_t> data(static_cast<std::size_t>(3 * bytes), 0);
    const int at = second_at(type) >= 0 ? second_at(type) : d_at(type);
    std::memcpy(data.data() + 2 * bytes + at, &inf, 2);  // the third row
    try {
      pack_kquant(type, data, 3, kquant_block_weights(type), pool);
      ADD_FAILURE() << "an infinite " << name(type) << " scale was accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("row 2"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace nanochat::kernels
