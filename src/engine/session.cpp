#include "nanochat/engine/session.hpp"

#include <algorithm>
#include <limits>
#include <optional>

#include "nanochat/kernels/vec.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::engine {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that
// much must be held back, since the next token may complete the stop string.
std::size_t held_back(std::string_view text, const std::vector<std::string>& stops) {
  std::size_t keep = 0;
  for (const std::string& s : stops) {
    for (std::size_t len = std::min(s.size() - 1, text.size()); len > keep; --len) {
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        keep = len;
        break;
      }
    }
  }
  return keep;
}

// Bytes at the end of `text` that start an incomplete UTF-8 character.
std::size_t incomplete_utf8(std::string_view text) {
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xc0) == 0x80) continue;  // continuation byte: look further back
    const std::size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kContextFull:
      return "context";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

void GenerateOptions::validate() const {
  if (n_predict < -1) {
    fail_argument("n_predict", n_predict, "use -1 (until the context is full), 0 or more");
  }
  sampling.validate();
  if (top_logprobs < 0 || top_logprobs > 20) {
    fail_argument("top_logprobs", top_logprobs, "must be in [0, 20]");
  }
  for (const auto& s : stop) {
    if (s.empty()) fail_argument("stop", "\"\"", "an empty stop string would stop at once");
  }
}

void validate_context(std::int64_t context) {
  if (context < 0) fail_argument("context", context, "must be 0 (the model's) or positive");
}

Session::Session(std::shared_ptr<LoadedModel> model, std::int64_t context)
    : model_(std::move(model)), cache_(model_->config(), (validate_context(context), context)) {}

void Session::reset() {
  cache_.clear();
  cached_.clear();
}

GenerateResult Session::generate(std::string_view prompt, const GenerateOptions& options,
                                 const TextCallback& on_text) {
  if (prompt.empty()) fail_argument("prompt", "", "the prompt is empty; give some text");
  const std::vector<model::TokenId> ids =
      model_->tokenizer().encode(prompt, options.add_special, options.parse_special);
  return generate_tokens(ids, options, on_text);
}

GenerateResult Session::generate_tokens(std::span<const model::TokenId> prompt,
                                        const GenerateOptions& options,
                                        const TextCallback& on_text) {
  start(prompt, options);
  while (const auto piece = next()) {
    if (!piece->empty() && on_text && !on_text(*piece)) cancel();
  }
  return std::move(decoder_->result());
}

void Session::start(std::span<const model::TokenId> prompt_span, const GenerateOptions& options) {
  // A copy: the caller's span may point into this session's own cached_tokens().
  const std::vector<model::TokenId> prompt_ids(prompt_span.begin(), prompt_span.end());
  options.validate();
  if (prompt_ids.empty()) fail_argument("prompt", "", "the prompt encodes to no tokens");
  if (static_cast<std::int64_t>(prompt_ids.size()) >= cache_.capacity()) {
    fail_argument("context", cache_.capacity(),
                  "the prompt has {} tokens, which leaves no room to generate; use a larger "
                  "context (the model was trained for {}) or a shorter prompt",
                  prompt_ids.size(), model_->config().context_length);
  }
  decoder_.emplace(*model_, prompt_ids, options);
  GenerateResult& result = decoder_->result();
  result.timings.prompt_tokens = static_cast<std::int64_t>(prompt_ids.size());

  // Reuse the longest common prefix; at least the prompt's last token runs again, for logits.
  std::size_t common = 0;
  while (common < cached_.size() && common + 1 < prompt_ids.size() &&
         cached_[common] == prompt_ids[common]) {
    ++common;
  }
  cached_.resize(common);
  cache_.set_length(static_cast<std::int64_t>(common));
  result.timings.reused_tokens = static_cast<std::int64_t>(common);

  const double begin = now_seconds();
  run(std::span<const model::TokenId>(prompt_ids).subspan(common));
  result.timings.prompt_ms = (now_seconds() - begin) * 1e3;
}

void Session::run(std::span<const model::TokenId> tokens) {
  model_->forward(tokens, cache_, logits_);
  cached_.insert(cached_.end(), tokens.begin(), tokens.end());
}

std::optional<std::string> Session::next() {
  if (!decoder_ || decoder_->done()) return std::nullopt;
  const double begin = now_seconds();
  std::string piece;
  const auto collect = [&piece](std::string_view text) {
    piece += text;
    return true;
  };
  const auto token = decoder_->step(logits_, cache_.length() < cache_.capacity(), collect);
  if (token) run(std::span<const model::TokenId>(&*token, 1));
  Timings& t = decoder_->result().timings;
  t.eval_ms += (now_seconds() - begin) * 1e3;
  t.generated_tokens = static_cast<std::int64_t>(decoder_->result().tokens.size());
  // The last piece (flushed when the answer ends) comes with the end.
  if (!token && piece.empty()) return std::nullopt;
  return piece;
}

void Session::cancel() {
  if (decoder_) decoder_->cancel();
}

GenerateResult& Session::result() {
  if (!decoder_) fail<InternalError>("Session::result before any generation");
  return decoder_->result();
}

Decoder::Decoder(const LoadedModel& model, std::span<const model::TokenId> prompt,
                 const GenerateOptions& options)
    : tokenizer_(model.tokenizer()),
      options_((options.validate(), options)),
      sampler_(options.sampling),
      history_(prompt.begin(), prompt.end()) {
  if (options_.ignore_eos) {
    for (std::size_t id = 0; id < tokenizer_.size(); ++id) {
      const auto t = static_cast<model::TokenId>(id);
      if ((tokenizer_.eos() && t == *tokenizer_.eos()) ||
          tokenizer_.token_type(t) == model::TokenType::kControl) {
        banned_.push_back(t);
      }
    }
  }
}

void Decoder::finish(FinishReason reason, const TextCallback& on_text) {
  result_.finish = reason;
  done_ = true;
  if (!pending_.empty() && reason != FinishReason::kStop) {
    result_.text += pending_;
    // After a cancel the callback is not called again (its receiver may be gone).
    if (on_text && reason != FinishReason::kCancelled) on_text(pending_);
  }
  pending_.clear();
  result_.timings.generated_tokens = static_cast<std::int64_t>(result_.tokens.size());
}

void Decoder::cancel() {
  if (!done_) finish(FinishReason::kCancelled, {});
}

std::optional<model::TokenId> Decoder::step(std::span<const float> logits_in, bool room,
                                            const TextCallback& on_text) {
  if (done_) return std::nullopt;
  if (options_.n_predict >= 0 && static_cast<int>(result_.tokens.size()) >= options_.n_predict) {
    finish(FinishReason::kLength, on_text);
    return std::nullopt;
  }
  std::span<const float> logits = logits_in;
  if (!banned_.empty()) {
    scratch_.assign(logits_in.begin(), logits_in.end());
    for (const model::TokenId t : banned_) {
      scratch_[static_cast<std::size_t>(t)] = -std::numeric_limits<float>::infinity();
    }
    logits = scratch_;
  }
  const model::TokenId next = sampler_.sample(logits, history_);
  const auto eos = tokenizer_.eos();
  if ((eos && next == *eos) || tokenizer_.token_type(next) == model::TokenType::kControl) {
    finish(FinishReason::kEos, on_text);
    return std::nullopt;
  }
  result_.tokens.push_back(next);
  history_.push_back(next);
  if (options_.logprobs) result_.logprobs.push_back(token_logprob(logits_in, next));
  pending_ += tokenizer_.piece(next);

  bool stopped = false;
  for (const auto& s : options_.stop) {
    const auto at = pending_.find(s);
    if (at != std::string::npos) {
      pending_.resize(at);
      stopped = true;
    }
  }
  const std::size_t hold =
      stopped ? 0 : std::max(held_back(pending_, options_.stop), incomplete_utf8(pending_));
  if (pending_.size() > hold) {
    const std::string_view out(pending_.data(), pending_.size() - hold);
    result_.text += out;
    const bool go_on = !on_text || on_text(out);
    pending_.erase(0, pending_.size() - hold);
    if (!go_on) {
      finish(FinishReason::kCancelled, on_text);
      return std::nullopt;
    }
  }
  if (stopped) {
    finish(FinishReason::kStop, on_text);
    return std::nullopt;
  }
  if (!room) {
    finish(FinishReason::kContextFull, on_text);
    return std::nullopt;
  }
  return next;
}

TokenLogprob Decoder::token_logprob(std::span<const float> logits, model::TokenId token) const {
  const kernels::LogSumExp lse =
      kernels::log_sum_exp(logits.data(), static_cast<std::int64_t>(logits.size()));
  const auto logprob = [&](model::TokenId t) {
    return static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(t)] - lse.max) -
                              lse.log_sum);
  };
  TokenLogprob r{token, logprob(token), {}};
  const auto k = static_cast<std::size_t>(
      std::min<std::int64_t>(options_.top_logprobs, static_cast<std::int64_t>(logits.size())));
  if (k > 0) {
    std::vector<model::TokenId> ids(logits.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<model::TokenId>(i);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](model::TokenId a, model::TokenId b) {
                        const float la = logits[static_cast<std::size_t>(a)];
                        const float lb = logits[static_cast<std::size_t>(b)];
                        return la > lb || (la == lb && a < b);
                      });
    for (std::size_t i = 0; i < k; ++i) r.top.emplace_back(ids[i], logprob(ids[i]));
  }
  return r;
}

}  // namespace nanochat::engine
