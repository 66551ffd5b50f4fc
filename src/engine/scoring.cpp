#include "nanochat/engine/scoring.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "nanochat/kernels/vec.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::engine {
namespace {

// log p(target) from one row of logits.
double log_prob(const float* row, std::size_t vocab, model::TokenId target) {
  const kernels::LogSumExp l = kernels::log_sum_exp(row, static_cast<std::int64_t>(vocab));
  return static_cast<double>(row[static_cast<std::size_t>(target)] - l.max) - l.log_sum;
}

void check_context(const LoadedModel& model, std::int64_t n_ctx) {
  if (n_ctx < 4) fail_argument("context", n_ctx, "use at least 4 tokens per chunk");
  if (n_ctx > model.config().context_length) {
    fail_argument("context", n_ctx, "exceeds the model's context of {} tokens",
                  model.config().context_length);
  }
}

// Scores positions [from, to) of `window` (predicting window[i + 1] from logits row i) into s.
void score_rows(const std::vector<float>& logits, std::size_t vocab,
                std::span<const model::TokenId> window, std::int64_t from, std::int64_t to,
                const model::Tokenizer& tok, Score& s) {
  for (std::int64_t i = from; i < to; ++i) {
    const model::TokenId target = window[static_cast<std::size_t>(i + 1)];
    const double lp = log_prob(logits.data() + static_cast<std::size_t>(i) * vocab, vocab, target);
    s.nll -= lp;
    s.nll_sq += lp * lp;
    ++s.tokens;
    s.bytes += static_cast<std::int64_t>(tok.piece(target).size());
  }
}

}  // namespace

void Score::add(const Score& o) {
  nll += o.nll;
  nll_sq += o.nll_sq;
  tokens += o.tokens;
  bytes += o.bytes;
  chunks += o.chunks;
}

double Score::perplexity() const {
  return tokens > 0 ? std::exp(nll / static_cast<double>(tokens)) : 0.0;
}

double Score::perplexity_error() const {
  if (tokens == 0) return 0;
  const double n = static_cast<double>(tokens);
  const double mean = nll / n;
  const double var = nll_sq / n - mean * mean;
  return perplexity() * std::sqrt(std::max(var, 0.0) / n);
}

double Score::bits_per_byte() const {
  return nll / std::log(2.0) / static_cast<double>(std::max<std::int64_t>(bytes, 1));
}

Score score_chunks(LoadedModel& model, std::span<const model::TokenId> tokens, std::int64_t n_ctx,
                   std::int64_t max_chunks, const std::function<void(const Score&)>& on_chunk) {
  check_context(model, n_ctx);
  const model::Tokenizer& tok = model.tokenizer();
  const std::int64_t total = static_cast<std::int64_t>(tokens.size()) / n_ctx;
  const std::int64_t chunks = max_chunks > 0 ? std::min(max_chunks, total) : total;
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
  model::KvCache cache(model.config(), n_ctx);
  std::vector<float> logits;
  std::vector<model::TokenId> chunk;
  Score s;
  for (std::int64_t c = 0; c < chunks; ++c) {
    chunk.assign(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (tok.add_bos() && tok.bos()) chunk[0] = *tok.bos();
    cache.clear();
    model.forward(chunk, cache, logits, true);
    score_rows(logits, vocab, chunk, n_ctx / 2, n_ctx - 1, tok, s);
    ++s.chunks;
    if (on_chunk) on_chunk(s);
  }
  return s;
}

Score score_document(LoadedModel& model, std::string_view text, std::int64_t n_ctx) {
  check_context(model, n_ctx);
  const model::Tokenizer& tok = model.tokenizer();
  const std::vector<model::TokenId> tokens = tok.encode(text, true);
  const auto n = static_cast<std::int64_t>(tokens.size());
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
  const bool has_bos = tok.add_bos() && tok.bos() && !tokens.empty() && tokens[0] == *tok.bos();
  model::KvCache cache(model.config(), n_ctx);
  std::vector<float> logits;
  Score s;
  // Window w covers tokens [start, start + n_ctx); it scores predictions of tokens
  // (scored_to, start + len), i.e. rows [scored_to - start, len - 1).
  std::int64_t scored_to = 0;  // the last token whose prediction is already scored
  const std::int64_t stride = std::max<std::int64_t>(1, n_ctx / 2);
  for (std::int64_t start = 0; scored_to < n - 1; start += stride) {
    const std::int64_t len = std::min(n_ctx, n - start);
    std::vector<model::TokenId> window(tokens.begin() + start, tokens.begin() + start + len);
    if (start > 0 && has_bos) window[0] = *tok.bos();  // as llama.cpp's chunks: BOS first
    cache.clear();
    model.forward(window, cache, logits, true);
    score_rows(logits, vocab, window, scored_to - start, len - 1, tok, s);
    scored_to = start + len - 1;
    ++s.chunks;
  }
  return s;
}

}  // namespace nanochat::engine
