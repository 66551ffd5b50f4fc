#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::ternary {
namespace {

TEST(Absmean, PerTensorScaleAndRounding) {
  // mean |w| = (0.2 + 0.5 + 1.0 + 0.3) / 4 = 0.5; w / s = 0.4, -1, 2, -0.6.
  const std::vector<float> w = {0.2f, -0.5f, 1.0f, -0.3f};
  const TernaryTensor t = quantize_absmean(w, 2, 2);
  ASSERT_EQ(t.scales.size(), 1u);
  EXPECT_FLOAT_EQ(t.scales[0], 0.5f);
  EXPECT_EQ(t.trits, (std::vector<std::int8_t>{0, -1, 1, -1}));
}

TEST(Absmean, PerBlockGroups) {
  std::vector<float> w(512);
  for (std::size_t i = 0; i < 256; ++i) w[i] = (i % 2 ? 1.0f : -1.0f);   // mean 1
  for (std::size_t i = 256; i < 512; ++i) w[i] = (i % 2 ? 4.0f : 0.0f);  // mean 2
  const TernaryTensor t = quantize_absmean(w, 1, 512, 256);
  ASSERT_EQ(t.scales.size(), 2u);
  EXPECT_FLOAT_EQ(t.scales[0], 1.0f);
  EXPECT_FLOAT_EQ(t.scales[1], 2.0f);
  EXPECT_EQ(t.trits[0], -1);
  EXPECT_EQ(t.trits[1], 1);
  EXPECT_EQ(t.trits[256], 0);
  EXPECT_EQ(t.trits[257], 1);  // 4 / 2 = 2 -> clamped to 1
  EXPECT_FLOAT_EQ(t.scale_at(0, 300), 2.0f);
}

TEST(Absmean, ZeroMatrixUsesEpsilonScale) {
  const std::vector<float> w(8, 0.0f);
  const TernaryTensor t = quantize_absmean(w, 2, 4);
  EXPECT_FLOAT_EQ(t.scales[0], kScaleEps);
  for (auto q : t.trits) EXPECT_EQ(q, 0);
}

TEST(Absmean, BadShapesAreErrors) {
  const std::vector<float> w(10, 1.0f);
  EXPECT_THROW(quantize_absmean(w, 3, 3), Error);
  EXPECT_THROW(quantize_absmean(w, 2, 5, 2), Error);  // group does not divide cols
}

TEST(Activations, AbsmaxPerToken) {
  // Token 0: max 2 -> x * 63.5: 1 -> 63.5 -> 64 (ties to even), -2 -> -127, 0.5 -> 31.75 -> 32.
  const std::vector<float> x = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  std::vector<std::int8_t> q(8, 99);
  std::vector<float> scales(2);
  quantize_activations(x.data(), 2, 3, q.data(), 4, scales.data());
  EXPECT_EQ(q[0], 64);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);
  EXPECT_EQ(q[3], 99);  // stride padding untouched
  EXPECT_EQ(q[4], 0);
  EXPECT_FLOAT_EQ(scales[0], 2.0f / 127);
  EXPECT_FLOAT_EQ(scales[1], kScaleEps / 127);
}

}  // namespace
}  // namespace nanochat::ternary
