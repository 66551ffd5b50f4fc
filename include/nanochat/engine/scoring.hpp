// Scoring text with a model: log-likelihood, perplexity and bits per byte. `nanochat perplexity`,
// `nanochat eval bpb` (and the server and Python module) all score through these functions.
//
// Thread-safety: as Session (each call has its own cache; the model may be shared).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "nanochat/engine/loaded_model.hpp"

namespace nanochat::engine {

// Sums over the scored tokens; nats.
struct Score {
  double nll = 0;     // -sum log p(token)
  double nll_sq = 0;  // sum (log p)^2, for the standard error
  std::int64_t tokens = 0;
  std::int64_t bytes = 0;  // bytes of the scored tokens' pieces
  std::int64_t chunks = 0;

  void add(const Score& o);
  double perplexity() const;
  double perplexity_error() const;  // standard error of the perplexity
  double bits_per_byte() const;
};

// llama.cpp's llama-perplexity chunking: `tokens` (already with BOS if the model adds one) are
// cut into chunks of `n_ctx`; each chunk starts with BOS (when the model adds one) and only its
// second half is scored, so every scored token has at least n_ctx/2 tokens before it. Tokens
// past the last whole chunk are not scored. `max_chunks` > 0 limits the chunks; `on_chunk`
// (optional) sees the running score after each chunk. Throws InvalidArgument ("context") when
// n_ctx < 4 or exceeds the model's context.
Score score_chunks(LoadedModel& model, std::span<const model::TokenId> tokens, std::int64_t n_ctx,
                   std::int64_t max_chunks = 0,
                   const std::function<void(const Score&)>& on_chunk = {});

// Every token of one document (BOS first when the model adds one; the first token is scored
// given BOS, or not at all without one): windows of n_ctx tokens that overlap by half, each
// scoring the tokens the previous window did not, so every token after the first window has at
// least n_ctx/2 tokens of context. For documents shorter than n_ctx this is one forward pass.
Score score_document(LoadedModel& model, std::string_view text, std::int64_t n_ctx);

}  // namespace nanochat::engine
