// Dequantization of the block types llama.cpp writes for embeddings and heads, against golden
// vectors made by an independent implementation (gguf-py; tools/dequant/make_vectors.py and
// tests/data/dequant/README.md): every value must be equal, bit for bit (NaN-free data).
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nanochat/gguf/dequant.hpp"
#include "nanochat/gguf/types.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::gguf {
namespace {

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Case {
  const char* name;
  TensorType type;
};

class Dequant : public ::testing::TestWithParam<Case> {};

TEST_P(Dequant, EqualsTheIndependentReference) {
  const Case c = GetParam();
  const std::string dir = std::string(NANOCHAT_TEST_DATA) + "/dequant/";
  const auto bytes = read_bytes(dir + c.name + ".bin");
  const auto want_bytes = read_bytes(dir + c.name + ".f32");
  ASSERT_EQ(want_bytes.size() % 4, 0U);
  std::vector<float> want(want_bytes.size() / 4);
  std::memcpy(want.data(), want_bytes.data(), want_bytes.size());
  ASSERT_TRUE(is_dequantizable(type_id(c.type)));
  const auto info = tensor_type_info(type_id(c.type), "");
  ASSERT_TRUE(info);
  ASSERT_EQ(bytes.size() / static_cast<std::size_t>(info->block_bytes) *
                static_cast<std::size_t>(info->block),
            want.size());
  // The whole tensor, then each block alone at its offset (as a row lookup reads them).
  std::vector<float> got(want.size());
  dequantize(type_id(c.type), bytes, 0, got);
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(got[i]), std::bit_cast<std::uint32_t>(want[i]))
        << c.name << " value " << i << ": " << got[i] << " vs " << want[i];
  }
  const auto block = static_cast<std::size_t>(info->block);
  std::vector<float> one(block);
  for (std::size_t first = 0; first < want.size(); first += block) {
    dequantize(type_id(c.type), bytes, first, one);
    for (std::size_t i = 0; i < block; ++i) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(one[i]), std::bit_cast<std::uint32_t>(want[first + i]))
          << c.name << " block at " << first;
    }
  }
  // Reading past the data, or from inside a block, is refused rather than read.
  std::vector<float> too_many(want.size() + block);
  EXPECT_THROW(dequantize(type_id(c.type), bytes, 0, too_many), InternalError);
  if (block > 1) {
    EXPECT_THROW(dequantize(type_id(c.type), bytes, 1, one), InternalError);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, Dequant,
    ::testing::Values(Case{"Q4_0", TensorType::kQ4_0}, Case{"Q4_1", TensorType::kQ4_1},
                      Case{"Q5_0", TensorType::kQ5_0}, Case{"Q5_1", TensorType::kQ5_1},
                      Case{"Q8_0", TensorType::kQ8_0}, Case{"Q4_K", TensorType::kQ4_K},
                      Case{"Q5_K", TensorType::kQ5_K}, Case{"Q6_K", TensorType::kQ6_K}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Dequant, OtherTypesAreNotRead) {
  EXPECT_FALSE(is_dequantizable(10));                           // Q2_K
  EXPECT_FALSE(is_dequantizable(type_id(TensorType::kTQ2_0)));  // ternary layers go elsewhere
  std::vector<std::uint8_t> bytes(84);
  std::vector<float> out(256);
  EXPECT_THROW(dequantize(10, bytes, 0, out), InternalError);
}

}  // namespace
}  // namespace nanochat::gguf
