// engine::Scheduler (continuous batching) on the shipped default model: a request gives the same
// tokens beside others as alone, prefixes are reused, cancellation ends a request within a step,
// the queue is bounded, stop() drains, log-probabilities are reported.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/scheduler.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/util/error.hpp"
#include "test_helpers.hpp"

namespace nanochat::engine {
namespace {

using namespace std::chrono_literals;
using nanochat::test_support::quiet_kernels;

std::shared_ptr<LoadedModel> shared_model() {
  static const std::shared_ptr<LoadedModel> m = [] {
    LoadOptions o;
    o.kernels = quiet_kernels(2);
    return LoadedModel::load(NANOCHAT_DEFAULT_MODEL, o);
  }();
  return m;
}

std::vector<model::TokenId> encode(const std::string& text) {
  return shared_model()->tokenizer().encode(text, true, false);
}

GenerateOptions sampled(int n, std::uint64_t seed) {
  GenerateOptions g;
  g.n_predict = n;
  g.sampling.temperature = 0.9f;
  g.sampling.seed = seed;
  return g;
}

// Waits for every request on `q` to finish; returns the results by index and checks that the
// streamed text adds up to each result's text.
// `streamed`: text of events already taken from the queue.
std::map<int, GenerateResult> collect(EventQueue& q, std::size_t count,
                                      std::map<int, std::string> streamed = {}) {
  std::map<int, GenerateResult> done;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (done.size() < count && std::chrono::steady_clock::now() < deadline) {
    auto e = q.pop(100ms);
    if (!e) continue;
    EXPECT_TRUE(e->error.empty()) << e->error;
    streamed[e->index] += e->text;
    if (e->done) done[e->index] = std::move(*e->result);
  }
  EXPECT_EQ(done.size(), count) << "requests did not finish in time";
  for (const auto& [i, r] : done) EXPECT_EQ(streamed[i], r.text) << "request " << i;
  return done;
}

const std::vector<std::string> kPrompts = {"fn main() {", "pub struct Point {", "impl Iterator for",
                                           "use std::collections::HashMap;\n",
                                           "// Parses a header\nfn parse("};

TEST(Scheduler, EachRequestGivesWhatItGivesAlone) {
  Scheduler scheduler(shared_model(), {.slots = 3,
                                       .context = 256,
                                       .max_waiting = 8,
                                       .prefill_chunk = 4});  // small chunks: prompts interleave
  auto q = std::make_shared<EventQueue>();
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    scheduler.submit(encode(kPrompts[i]), sampled(24 + static_cast<int>(i), 100 + i), q,
                     static_cast<int>(i));
  }
  const auto results = collect(*q, kPrompts.size());
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    Session alone(shared_model(), 256);
    const GenerateResult want =
        alone.generate(kPrompts[i], sampled(24 + static_cast<int>(i), 100 + i));
    const GenerateResult& got = results.at(static_cast<int>(i));
    EXPECT_EQ(got.tokens, want.tokens) << kPrompts[i];
    EXPECT_EQ(got.text, want.text);
    EXPECT_EQ(got.finish, want.finish);
    EXPECT_EQ(got.timings.prompt_tokens, static_cast<std::int64_t>(encode(kPrompts[i]).size()));
    EXPECT_EQ(got.timings.generated_tokens, static_cast<std::int64_t>(got.tokens.size()));
    if (!got.tokens.empty()) {
      EXPECT_GT(got.timings.first_token_ms, 0);
      EXPECT_GE(got.timings.first_token_ms, got.timings.queued_ms);
    }
  }
  // Five requests over three slots: the last two waited for a slot.
  EXPECT_GT(results.at(4).timings.queued_ms + results.at(3).timings.queued_ms, 0);
  EXPECT_GT(scheduler.stats().steps, 0);
}

TEST(Scheduler, ANextTurnReusesTheSlotsPrefix) {
  Scheduler scheduler(shared_model(), {.slots = 2, .context = 256});
  auto q = std::make_shared<EventQueue>();
  const std::vector<model::TokenId> first = encode("fn add(a: i32, b: i32) -> i32 {");
  GenerateOptions eight = sampled(8, 1);
  eight.ignore_eos = true;
  scheduler.submit(first, eight, q, 0);
  const GenerateResult r1 = collect(*q, 1).at(0);
  std::vector<model::TokenId> second = first;
  second.insert(second.end(), r1.tokens.begin(), r1.tokens.end());
  const auto more = shared_model()->tokenizer().encode("\n}\n\nfn sub(", false, false);
  second.insert(second.end(), more.begin(), more.end());
  scheduler.submit(second, sampled(8, 2), q, 1);
  const GenerateResult r2 = collect(*q, 1).at(1);
  // The first request's prompt and generated tokens are in the slot's cache (it stopped at its
  // length limit, after running its last token).
  ASSERT_EQ(r1.finish, FinishReason::kLength);
  EXPECT_EQ(r2.timings.reused_tokens, static_cast<std::int64_t>(first.size() + r1.tokens.size()));
  Session fresh(shared_model(), 256);
  EXPECT_EQ(r2.tokens, fresh.generate_tokens(second, sampled(8, 2)).tokens);
}

TEST(Scheduler, CancelEndsARequestWithinAStep) {
  Scheduler scheduler(shared_model(), {.slots = 2, .context = 16384});
  auto q = std::make_shared<EventQueue>();
  GenerateOptions forever = sampled(-1, 3);
  forever.ignore_eos = true;
  auto request = scheduler.submit(encode("fn main() {"), forever, q, 0);
  auto other = std::make_shared<EventQueue>();
  scheduler.submit(encode("struct A;"), sampled(16, 4), other, 0);
  const auto first = q->pop(30s);  // it is generating
  ASSERT_TRUE(first.has_value());
  request->cancel();
  const auto result = collect(*q, 1, {{0, first->text}}).at(0);
  EXPECT_EQ(result.finish, FinishReason::kCancelled);
  EXPECT_LT(result.tokens.size(), 500u);
  EXPECT_EQ(collect(*other, 1).at(0).tokens.size(), 16u) << "the other request is unaffected";
}

TEST(Scheduler, TheQueueIsBounded) {
  Scheduler scheduler(shared_model(), {.slots = 1, .context = 16384, .max_waiting = 1});
  GenerateOptions forever = sampled(-1, 5);
  forever.ignore_eos = true;
  auto q = std::make_shared<EventQueue>();
  auto running = scheduler.submit(encode("fn main() {"), forever, q, 0);
  const auto first = q->pop(30s);  // admitted: the slot is busy
  ASSERT_TRUE(first.has_value());
  auto waiting = scheduler.submit(encode("fn a() {"), sampled(4, 6), q, 1);
  EXPECT_THROW(scheduler.submit(encode("fn b() {"), sampled(4, 7), q, 2), QueueFull);
  EXPECT_EQ(scheduler.stats().running, 1);
  EXPECT_EQ(scheduler.stats().waiting, 1);
  running->cancel();
  const auto results = collect(*q, 2, {{0, first->text}});
  EXPECT_EQ(results.at(0).finish, FinishReason::kCancelled);
  EXPECT_EQ(results.at(1).tokens.size(), 4u);
}

TEST(Scheduler, BadRequestsNameTheirParameter) {
  Scheduler scheduler(shared_model(), {.slots = 1, .context = 8});
  auto q = std::make_shared<EventQueue>();
  try {
    scheduler.submit(encode("fn main() { let x = 1; let y = 2; x + y }"), sampled(4, 1), q);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.parameter(), "context") << e.what();
  }
  GenerateOptions bad = sampled(4, 1);
  bad.sampling.top_p = 2;
  EXPECT_THROW(scheduler.submit(encode("fn"), bad, q), InvalidArgument);
  EXPECT_THROW(scheduler.submit({}, sampled(4, 1), q), InvalidArgument);
  EXPECT_THROW(Scheduler(shared_model(), {.slots = 0}), InvalidArgument);
}

TEST(Scheduler, StopFinishesRunningRequestsThenRefusesNewOnes) {
  // A context far beyond the model's 512 tokens: the endless request cannot fill it in time.
  Scheduler scheduler(shared_model(), {.slots = 2, .context = 16384});
  auto q = std::make_shared<EventQueue>();
  GenerateOptions forever = sampled(-1, 8);
  forever.ignore_eos = true;
  scheduler.submit(encode("fn main() {"), sampled(12, 9), q, 0);
  scheduler.submit(encode("fn long() {"), forever, q, 1);
  // The short one finishes; the endless one is cancelled at the deadline.
  scheduler.stop(std::chrono::steady_clock::now() + 500ms);
  const auto results = collect(*q, 2);
  EXPECT_EQ(results.at(0).tokens.size(), 12u);
  EXPECT_EQ(results.at(1).finish, FinishReason::kCancelled);
  EXPECT_THROW(scheduler.submit(encode("fn"), sampled(4, 1), q), ShuttingDown);
}

TEST(Scheduler, ReportsLogprobs) {
  Scheduler scheduler(shared_model(), {.slots = 1, .context = 256});
  auto q = std::make_shared<EventQueue>();
  GenerateOptions greedy = sampled(6, 1);
  greedy.sampling.temperature = 0;
  greedy.logprobs = true;
  greedy.top_logprobs = 3;
  scheduler.submit(encode("fn main() {"), greedy, q);
  const GenerateResult r = collect(*q, 1).at(0);
  ASSERT_EQ(r.logprobs.size(), r.tokens.size());
  for (std::size_t i = 0; i < r.tokens.size(); ++i) {
    const TokenLogprob& lp = r.logprobs[i];
    EXPECT_EQ(lp.token, r.tokens[i]);
    EXPECT_LE(lp.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, lp.token) << "greedy picks the most likely token";
    EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
    EXPECT_GE(lp.top[0].second, lp.top[1].second);
    EXPECT_GE(lp.top[1].second, lp.top[2].second);
  }
}

}  // namespace
}  // namespace nanochat::engine
