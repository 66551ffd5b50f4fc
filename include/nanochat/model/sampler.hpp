// Token sampling, in llama.cpp's order: repetition, presence and frequency penalties over the
// last n tokens, top-k,
// top-p, min-p, temperature, then a draw from the softmax. Temperature <= 0 is greedy (argmax
// after the penalty). The same seed and logits give the same token on every machine and at any
// thread count: the generator is a seeded mt19937_64, ties are broken by token id, and the
// uniform draw is built from the generator's bits directly.
//
// Thread-safety: one Sampler per generation session.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "nanochat/model/tokenizer.hpp"

namespace nanochat::model {

struct SamplerParams {
  float temperature = 0.8f;     // --temp; <= 0: greedy
  int top_k = 40;               // --top-k; 0: off
  float top_p = 0.95f;          // --top-p; 1: off
  float min_p = 0.05f;          // --min-p; 0: off
  float repeat_penalty = 1.0f;  // --repeat-penalty; 1: off
  int repeat_last_n = 64;       // --repeat-last-n; 0: off, -1: all of the history
  // OpenAI's penalties over the same window: a token's logit drops by presence_penalty once it
  // appeared and by frequency_penalty for each time it appeared (in [-2, 2]; 0: off).
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::uint64_t seed = 0;  // -s

  // Throws UsageError naming the flag when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);

  // Picks the next token from `logits` (one per vocabulary entry); `history` is the context so
  // far (prompt and generated tokens), for the repetition penalty.
  TokenId sample(std::span<const float> logits, std::span<const TokenId> history);

  const SamplerParams& params() const { return params_; }

 private:
  struct Candidate {
    TokenId id;
    float logit;
  };
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
  std::vector<float> penalized_;
};

}  // namespace nanochat::model
