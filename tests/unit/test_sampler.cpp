#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "nanochat/model/sampler.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

SamplerParams plain(float temperature) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 42;
  return p;
}

TEST(Sampler, GreedyPicksTheArgmaxAndBreaksTiesByLowestId) {
  Sampler s(plain(0.0f));
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 2.9f}, {}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{5.0f, 1.0f, 5.0f}, {}), 0);
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
  for (float t : {1.0f, 0.5f}) {
    Sampler s(plain(t));
    std::map<TokenId, int> counts;
    const int draws = 40000;
    for (int i = 0; i < draws; ++i) counts[s.sample(logits, {})]++;
    double z = 0;
    for (float l : logits) z += std::exp(l / t);
    for (TokenId id = 0; id < 4; ++id) {
      const double p = std::exp(logits[static_cast<std::size_t>(id)] / t) / z;
      const double sd = std::sqrt(p * (1 - p) / draws);
      EXPECT_NEAR(counts[id] / static_cast<double>(draws), p, 5 * sd + 1e-4)
          << "t " << t << " id " << id;
    }
  }
}

TEST(Sampler, SameSeedSameTokens) {
  const std::vector<float> logits = {0.3f, 0.2f, 0.1f, 0.0f, -0.1f};
  auto run = [&](std::uint64_t seed) {
    SamplerParams p = plain(1.0f);
    p.seed = seed;
    Sampler s(p);
    std::vector<TokenId> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(logits, out));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampler, TopKTopPMinPRestrictTheCandidates) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f, -5.0f};
  SamplerParams p = plain(1.0f);
  p.top_k = 2;
  Sampler topk(p);
  for (int i = 0; i < 2000; ++i) EXPECT_LT(topk.sample(logits, {}), 2);

  p = plain(1.0f);
  p.top_p = 0.5f;  // token 0 alone has p = 0.512 >= 0.5, so it is the only candidate
  Sampler topp(p);
  for (int i = 0; i < 2000; ++i) EXPECT_EQ(topp.sample(logits, {}), 0);

  p = plain(1.0f);
  p.min_p = 0.1f;  // exp(-3) ~ 0.05 of the top: token 2 and 3 are cut
  Sampler minp(p);
  for (int i = 0; i < 2000; ++i) EXPECT_LT(minp.sample(logits, {}), 2);
}

TEST(Sampler, RepetitionPenaltyPushesRecentTokensDown) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  const std::vector<float> logits = {2.0f, 1.5f, -1.0f};
  EXPECT_EQ(s.sample(logits, std::vector<TokenId>{0}), 1);        // 2.0 / 2 = 1.0 < 1.5
  EXPECT_EQ(s.sample(logits, std::vector<TokenId>{0, 2, 1}), 0);  // only 2 and 1 are recent
}

TEST(Sampler, PresenceAndFrequencyPenaltiesFollowOpenAi) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.2f};
  SamplerParams p = plain(0.0f);
  p.presence_penalty = 0.6f;  // 2.0 - 0.6 = 1.4 < 1.5
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<TokenId>{0, 0, 0}), 1);
  p = plain(0.0f);
  p.frequency_penalty = 0.3f;  // once: 1.7 wins; three times: 2.0 - 0.9 = 1.1 loses to 1.5
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<TokenId>{0}), 0);
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<TokenId>{0, 0, 0}), 1);
  p.frequency_penalty = -1.0f;  // negative: encourages repetition
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<TokenId>{2}), 2);
}

// The library names its own parameter; the CLI's main() maps it to the flag (cli::flag_for).
TEST(Sampler, BadValuesNameTheirParameter) {
  auto expect = [](SamplerParams p, const char* parameter) {
    try {
      p.validate();
      ADD_FAILURE() << parameter;
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(e.parameter(), parameter) << e.what();
    }
  };
  SamplerParams p;
  p.top_k = -1;
  expect(p, "top_k");
  p = {};
  p.top_p = 0.0f;
  expect(p, "top_p");
  p = {};
  p.min_p = 1.5f;
  expect(p, "min_p");
  p = {};
  p.repeat_penalty = 0.0f;
  expect(p, "repeat_penalty");
  p = {};
  p.repeat_last_n = -2;
  expect(p, "repeat_last_n");
  p = {};
  p.presence_penalty = 2.5f;
  expect(p, "presence_penalty");
  p = {};
  p.frequency_penalty = std::nanf("");
  expect(p, "frequency_penalty");
  p = {};
  p.temperature = std::nanf("");
  expect(p, "temperature");
  p = {};
  p.temperature = -0.5f;
  expect(p, "temperature");
}

}  // namespace
}  // namespace nanochat::model
