// engine::LoadedModel and engine::Session on the shipped default model (a real tokenizer and
// real weights): streaming whole UTF-8 characters, holding back a partial stop string, prefix
// reuse giving what a fresh prefill gives, several sessions over one loaded model at once, and
// errors that name the library's parameters.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/scoring.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/util/error.hpp"
#include "test_helpers.hpp"

namespace nanochat::engine {
namespace {

using nanochat::test_support::quiet_kernels;

std::shared_ptr<LoadedModel> shared_model() {
  static const std::shared_ptr<LoadedModel> m = [] {
    LoadOptions o;
    o.kernels = quiet_kernels(2);
    return LoadedModel::load(NANOCHAT_DEFAULT_MODEL, o);
  }();
  return m;
}

GenerateOptions greedy(int n) {
  GenerateOptions g;
  g.n_predict = n;
  g.sampling.temperature = 0;
  return g;
}

// Positions inside a well-formed multi-byte character of `s` (not at its first byte). A byte
// model can also write malformed sequences (a stray continuation byte); those are passed on as
// they are, and no boundary is wrong next to them.
std::vector<bool> inside_characters(std::string_view s) {
  std::vector<bool> inside(s.size() + 1, false);
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    bool ok = i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    }
    if (!ok || n == 1) {
      ++i;
      continue;
    }
    for (std::size_t k = 1; k < n; ++k) inside[i + k] = true;
    i += n;
  }
  return inside;
}

TEST(LoadedModel, OwnsFileTokenizerAndTemplate) {
  const auto m = shared_model();
  EXPECT_EQ(m->config().vocab_size, static_cast<std::int64_t>(m->tokenizer().size()));
  EXPECT_EQ(m->chat_template().name(), "plain");
  EXPECT_EQ(m->file().architecture(), "nanochat");
  EXPECT_GT(m->bytes_per_token(), 0u);
}

TEST(LoadedModel, ReportsLoadingProgressUpToTheWholeFile) {
  LoadOptions o;
  o.kernels = quiet_kernels(1);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  o.on_progress = [&](std::uint64_t done, std::uint64_t total) { calls.emplace_back(done, total); };
  const auto m = LoadedModel::load(NANOCHAT_DEFAULT_MODEL, o);
  // One report a layer and one at the end, never going back, ending at the file's tensor bytes.
  ASSERT_EQ(calls.size(), static_cast<std::size_t>(m->config().n_layers) + 1);
  std::uint64_t tensor_bytes = 0;
  for (const auto& t : m->file().tensors()) tensor_bytes += t.bytes;
  std::uint64_t last = 0;
  for (const auto& [done, total] : calls) {
    EXPECT_EQ(total, tensor_bytes);
    EXPECT_GE(done, last);
    EXPECT_LE(done, total);
    last = done;
  }
  EXPECT_LT(calls.front().first, tensor_bytes);
  EXPECT_EQ(calls.back().first, tensor_bytes);
}

TEST(LoadedModel, MissingFileNamesIt) {
  try {
    (void)LoadedModel::load("/nonexistent/model.gguf");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos) << e.what();
  }
}

TEST(Session, StreamsOnlyWholeUtf8Characters) {
  // Byte-level BPE pieces split multi-byte characters; a prompt full of them makes the model
  // produce such pieces. Every chunk the callback sees must be valid UTF-8 on its own.
  Session s(shared_model());
  GenerateOptions g = greedy(48);
  g.sampling.temperature = 1.5f;  // wander into rare byte pieces
  g.sampling.seed = 3;
  int multibyte = 0;
  for (int round = 0; round < 4; ++round) {
    g.sampling.seed = static_cast<std::uint64_t>(round) + 3;
    std::vector<std::size_t> boundaries;
    std::string streamed;
    const GenerateResult r = s.generate("// Größe → 大小 ≤ ∑ λ émoji 🦀🦀 «ü» ",
                                        g, [&](std::string_view t) {
                                          streamed += t;
                                          boundaries.push_back(streamed.size());
                                          return true;
                                        });
    EXPECT_EQ(streamed, r.text);
    const std::vector<bool> inside = inside_characters(r.text);
    for (std::size_t b : boundaries) {
      EXPECT_FALSE(inside[b]) << "a chunk ends inside a character at byte " << b << " of "
                              << r.text;
    }
    for (bool x : inside) multibyte += x ? 1 : 0;
  }
  EXPECT_GT(multibyte, 0) << "the test never saw a multi-byte character";
}

TEST(Session, HoldsBackAPartialStopString) {
  // Find what the model writes greedily, then stop on a string in the middle of it: the text
  // streamed must end right before the stop string and never contain a prefix of it that was
  // later taken back.
  Session s(shared_model());
  const std::string prompt = "fn fibonacci(n: u64) -> u64 {\n";
  const GenerateResult full = s.generate(prompt, greedy(40));
  ASSERT_GE(full.text.size(), 12u) << full.text;
  const std::string stop = full.text.substr(6, 5);
  const std::size_t at = full.text.find(stop);
  GenerateOptions g = greedy(40);
  g.stop = {stop};
  std::string streamed;
  const GenerateResult r = s.generate(prompt, g, [&](std::string_view t) {
    streamed += t;
    return true;
  });
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(r.text, full.text.substr(0, at));
  EXPECT_EQ(streamed, r.text);
}

TEST(Session, PrefixReuseEqualsAFreshPrefill) {
  const auto m = shared_model();
  const std::string first = "pub fn parse(input: &str) -> Result<u32, String> {\n";
  const std::string longer = first + "    let n = input.trim();\n";
  Session warm(m);
  const GenerateResult a = warm.generate(first, greedy(16));
  const GenerateResult b = warm.generate(longer, greedy(24));
  EXPECT_GT(b.timings.reused_tokens, 0);
  EXPECT_LT(b.timings.reused_tokens, b.timings.prompt_tokens);

  Session fresh(m);
  const GenerateResult c = fresh.generate(longer, greedy(24));
  EXPECT_EQ(c.timings.reused_tokens, 0);
  EXPECT_EQ(b.tokens, c.tokens);
  EXPECT_EQ(b.text, c.text);

  // The same prompt again reuses all of it but its last token.
  const GenerateResult d = warm.generate(longer, greedy(24));
  EXPECT_EQ(d.timings.reused_tokens, d.timings.prompt_tokens - 1);
  EXPECT_EQ(d.tokens, c.tokens);
  (void)a;
}

TEST(Session, ContinuesAConversationFromItsCache) {
  // A chat turn: the next prompt is the previous prompt, the answer and a new message. Only the
  // new tokens (and any the tokenizer splits differently) run again.
  const auto m = shared_model();
  Session s(m);
  std::vector<model::ChatMessage> msgs = {{"user", "Write a function that adds two numbers."}};
  GenerateOptions g = greedy(24);
  g.stop = m->chat_template().stop();
  g.parse_special = true;
  const GenerateResult r1 = s.generate(m->chat_template().render(msgs, true), g);
  msgs.push_back({"assistant", r1.text});
  msgs.push_back({"user", "Now subtract them."});
  const std::string prompt2 = m->chat_template().render(msgs, true);
  const GenerateResult r2 = s.generate(prompt2, g);
  EXPECT_GE(r2.timings.reused_tokens, r1.timings.prompt_tokens);
  Session fresh(m);
  EXPECT_EQ(fresh.generate(prompt2, g).tokens, r2.tokens);
}

TEST(Session, SeveralSessionsOnOneModelAtOnce) {
  const auto m = shared_model();
  const std::vector<std::string> prompts = {"fn main() {\n", "impl Display for Point {\n",
                                            "use std::collections::HashMap;\n",
                                            "#[derive(Debug)]\nstruct"};
  std::vector<std::vector<model::TokenId>> alone;
  for (const auto& p : prompts) {
    Session s(m);
    alone.push_back(s.generate(p, greedy(20)).tokens);
  }
  std::vector<std::vector<model::TokenId>> together(prompts.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      Session s(m);
      for (int round = 0; round < 3; ++round)
        together[i] = s.generate(prompts[i], greedy(20)).tokens;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(together, alone);
}

TEST(Session, SameSeedSameText) {
  Session s(shared_model());
  GenerateOptions g = greedy(24);
  g.sampling.temperature = 0.9f;
  g.sampling.seed = 42;
  const auto a = s.generate("let v: Vec<i32> = ", g);
  const auto b = s.generate("let v: Vec<i32> = ", g);
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST(Session, ErrorsNameLibraryParameters) {
  const auto m = shared_model();
  auto param_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return e.parameter();
    }
    return "(no error)";
  };
  EXPECT_EQ(param_of([&] { Session(m, -3); }), "context");
  Session s(m, 16);
  EXPECT_EQ(param_of([&] { s.generate("", greedy(4)); }), "prompt");
  EXPECT_EQ(param_of([&] { s.generate(std::string(400, 'x') + " long prompt", greedy(4)); }),
            "context");
  GenerateOptions g = greedy(4);
  g.sampling.temperature = -1;
  EXPECT_EQ(param_of([&] { s.generate("fn", g); }), "temperature");
  g = greedy(-2);
  EXPECT_EQ(param_of([&] { s.generate("fn", g); }), "n_predict");
  g = greedy(4);
  g.stop = {""};
  EXPECT_EQ(param_of([&] { s.generate("fn", g); }), "stop");
  // A KV cache larger than the machine's memory is refused before anything is allocated.
  EXPECT_EQ(param_of([&] { Session(m, std::int64_t{1} << 56); }), "context");
}

TEST(Session, FillsTheContextAndSaysSo) {
  const auto m = shared_model();
  const std::string prompt = "fn main() {\n    let xs = vec![1, 2, 3];\n    for x in xs.iter() {\n";
  const auto n = static_cast<std::int64_t>(m->tokenizer().encode(prompt, true).size());
  Session roomy(m);
  ASSERT_EQ(roomy.generate(prompt, greedy(4)).finish, FinishReason::kLength)
      << "the model ends this prompt within 4 tokens; pick another";
  Session s(m, n + 4);
  const GenerateResult r = s.generate(prompt, greedy(-1));
  EXPECT_EQ(r.finish, FinishReason::kContextFull);
  EXPECT_EQ(static_cast<std::int64_t>(s.cached_tokens().size()), n + 4);
  // and the session goes on afterwards
  const GenerateResult again = s.generate(prompt, greedy(2));
  EXPECT_EQ(again.tokens.size(), 2u);
}

TEST(Scoring, SharedModelScoresAsBefore) {
  const auto m = shared_model();
  const std::string text = "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n";
  const Score doc = score_document(*m, text, 64);
  EXPECT_GT(doc.tokens, 5);
  EXPECT_GT(doc.bits_per_byte(), 0.0);
  EXPECT_LT(doc.bits_per_byte(), 8.0);
  // scoring does not disturb a session's cache
  Session s(m);
  const auto a = s.generate("fn add(", greedy(8));
  (void)score_document(*m, text, 64);
  const auto b = s.generate("fn add(", greedy(8));
  EXPECT_EQ(a.tokens, b.tokens);
}

}  // namespace
}  // namespace nanochat::engine
