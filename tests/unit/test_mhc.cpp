// mHC-lite: exact double stochasticity for n = 2 and 4 (RapidCheck over random logits), the
// composite gain bound across layers, and read/write against hand-computed values.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "nanochat/mhc/mhc.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::mhc {
namespace {

rc::Gen<float> gen_logit() {
  return rc::gen::map(rc::gen::inRange(-30000, 30001),
                      [](int v) { return static_cast<float>(v) / 1000.0f; });
}

MhcParams random_params(int n) {
  MhcParams p = MhcParams::identity(n);
  for (auto& l : p.res_logits) l = *gen_logit();
  return p;
}

RC_GTEST_PROP(MhcProps, TwoStreamMixingIsDoublyStochastic, ()) {
  const MhcParams p = random_params(2);
  const auto h = residual_matrix(p);
  RC_ASSERT(check_doubly_stochastic(h, 2).ok(1e-6));
  RC_ASSERT(h[0] == h[3]);  // a I + (1 - a) swap is symmetric
}

RC_GTEST_PROP(MhcProps, FourStreamMixingIsDoublyStochastic, ()) {
  const MhcParams p = random_params(4);
  RC_ASSERT(check_doubly_stochastic(residual_matrix(p), 4).ok(1e-6));
}

RC_GTEST_PROP(MhcProps, CompositeGainStaysOneAcrossManyLayers, ()) {
  const int n = *rc::gen::element(2, 4);
  const int layers = *rc::gen::inRange(1, 61);
  std::vector<MhcParams> stack;
  for (int l = 0; l < layers; ++l) stack.push_back(random_params(n));
  const double gain = composite_gain(stack);
  RC_ASSERT(std::fabs(gain - 1.0) <= 1e-5);
}

RC_GTEST_PROP(MhcProps, MixingPreservesTheStreamSum, ()) {
  // Columns sum to 1, so the sum over streams of H x equals the sum of x: mixing moves signal
  // between streams without creating or losing any.
  const int n = *rc::gen::element(1, 2, 4);
  MhcParams p = random_params(n);
  for (auto& v : p.h_post) v = 0.0f;
  const std::size_t width = 5;
  std::vector<float> x(static_cast<std::size_t>(n) * width);
  for (auto& v : x) v = *gen_logit();
  std::vector<float> before(width, 0.0f), after(width, 0.0f);
  for (std::size_t i = 0; i < x.size(); ++i) before[i % width] += x[i];
  const std::vector<float> zeros(width, 0.0f);
  write(p, residual_matrix(p), x, width, zeros);
  for (std::size_t i = 0; i < x.size(); ++i) after[i % width] += x[i];
  for (std::size_t d = 0; d < width; ++d) {
    RC_ASSERT(std::fabs(before[d] - after[d]) <= 1e-3f * (1.0f + std::fabs(before[d])));
  }
}

TEST(Mhc, PermutationsAreTheTwentyFourDistinctOnes) {
  std::set<std::array<int, 4>> seen(permutations4().begin(), permutations4().end());
  EXPECT_EQ(seen.size(), 24u);
  EXPECT_EQ(permutations4()[0], (std::array<int, 4>{0, 1, 2, 3}));
}

TEST(Mhc, TwoStreamsByHand) {
  MhcParams p = MhcParams::identity(2);
  p.res_logits = {0.0f};  // a = 0.5
  p.h_pre = {0.25f, 0.75f};
  p.h_post = {1.0f, -2.0f};
  const auto h = residual_matrix(p);
  EXPECT_FLOAT_EQ(h[0], 0.5f);
  EXPECT_FLOAT_EQ(h[1], 0.5f);
  std::vector<float> x = {1, 2, 3, 4};  // stream 0 = (1, 2), stream 1 = (3, 4)
  std::vector<float> u(2);
  read(p, x, 2, u);
  EXPECT_FLOAT_EQ(u[0], 0.25f * 1 + 0.75f * 3);
  EXPECT_FLOAT_EQ(u[1], 0.25f * 2 + 0.75f * 4);
  const std::vector<float> y = {10, 20};
  write(p, h, x, 2, y);
  EXPECT_FLOAT_EQ(x[0], 0.5f * 1 + 0.5f * 3 + 10);
  EXPECT_FLOAT_EQ(x[1], 0.5f * 2 + 0.5f * 4 + 20);
  EXPECT_FLOAT_EQ(x[2], 0.5f * 1 + 0.5f * 3 - 20);
  EXPECT_FLOAT_EQ(x[3], 0.5f * 2 + 0.5f * 4 - 40);
}

TEST(Mhc, OneStreamIsThePlainResidual) {
  const MhcParams p = MhcParams::identity(1);
  EXPECT_EQ(residual_matrix(p), std::vector<float>{1.0f});
  std::vector<float> x = {1, 2};
  const std::vector<float> y = {3, 4};
  write(p, residual_matrix(p), x, 2, y);
  EXPECT_EQ(x, (std::vector<float>{4, 6}));
}

TEST(Mhc, BadParametersAreErrors) {
  MhcParams p = MhcParams::identity(4);
  p.res_logits.pop_back();
  EXPECT_THROW(p.validate(), Error);
  EXPECT_THROW(MhcParams::identity(3), Error);
  MhcParams q = MhcParams::identity(2);
  q.res_logits[0] = std::nanf("");
  EXPECT_THROW(residual_matrix(q), Error);
  std::vector<MhcParams> mixed = {MhcParams::identity(2), MhcParams::identity(4)};
  EXPECT_THROW(composite_gain(mixed), Error);
}

TEST(Mhc, NotDoublyStochasticIsDetected) {
  const std::vector<float> h = {0.9f, 0.1f, 0.2f, 0.8f};  // columns sum to 1.1 and 0.9
  const StochasticCheck c = check_doubly_stochastic(h, 2);
  EXPECT_FALSE(c.ok());
  EXPECT_NEAR(c.max_deviation, 0.1, 1e-6);
  const std::vector<float> neg = {1.5f, -0.5f, -0.5f, 1.5f};
  EXPECT_FALSE(check_doubly_stochastic(neg, 2).ok());
}

}  // namespace
}  // namespace nanochat::mhc
