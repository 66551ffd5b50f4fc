#include "nanochat/engine/session.hpp"

#include <algorithm>
#include <limits>

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
  for (const auto& s : stop) {
    if (s.empty()) fail_argument("stop", "\"\"", "an empty stop string would stop at once");
  }
}

void validate_context(std::int64_t context) {
  if (context < 0) fail_argument("context", context, "must be 0 (the model's) or positive");
}

Session::Session(std::shared_ptr<LoadedModel> model, std::int64_t context)
    : model_(std::move(model)),
      cache_(model_->config(),
             (validate_context(context), context > 0) ? context : model_->config().context_length) {
}

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

GenerateResult Session::generate_tokens(std::span<const model::TokenId> prompt_span,
                                        const GenerateOptions& options,
                                        const TextCallback& on_text) {
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
  const model::Tokenizer& tokenizer = model_->tokenizer();
  model::Sampler sampler(options.sampling);
  GenerateResult result;
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

  std::vector<model::TokenId> history(prompt_ids.begin(), prompt_ids.end());
  double start = now_seconds();
  const auto run = [&](std::span<const model::TokenId> tokens) {
    model_->forward(tokens, cache_, logits_);
    cached_.insert(cached_.end(), tokens.begin(), tokens.end());
  };
  run(std::span<const model::TokenId>(prompt_ids).subspan(common));
  result.timings.prompt_ms = (now_seconds() - start) * 1e3;

  std::vector<model::TokenId> banned;  // --ignore-eos: the tokens that would end the answer
  if (options.ignore_eos) {
    for (std::size_t id = 0; id < tokenizer.size(); ++id) {
      const auto t = static_cast<model::TokenId>(id);
      if ((tokenizer.eos() && t == *tokenizer.eos()) ||
          tokenizer.token_type(t) == model::TokenType::kControl) {
        banned.push_back(t);
      }
    }
  }

  std::string pending;  // generated text not yet passed to the callback
  start = now_seconds();
  const auto eos = tokenizer.eos();
  for (;;) {
    if (options.n_predict >= 0 && static_cast<int>(result.tokens.size()) >= options.n_predict) {
      result.finish = FinishReason::kLength;
      break;
    }
    for (const model::TokenId t : banned) {
      logits_[static_cast<std::size_t>(t)] = -std::numeric_limits<float>::infinity();
    }
    const model::TokenId next = sampler.sample(logits_, history);
    if ((eos && next == *eos) || tokenizer.token_type(next) == model::TokenType::kControl) {
      result.finish = FinishReason::kEos;
      break;
    }
    result.tokens.push_back(next);
    history.push_back(next);
    pending += tokenizer.piece(next);

    bool stopped = false;
    for (const auto& s : options.stop) {
      const auto at = pending.find(s);
      if (at != std::string::npos) {
        pending.resize(at);
        stopped = true;
      }
    }
    const std::size_t hold =
        stopped ? 0 : std::max(held_back(pending, options.stop), incomplete_utf8(pending));
    if (pending.size() > hold) {
      const std::string_view out(pending.data(), pending.size() - hold);
      result.text += out;
      const bool go_on = !on_text || on_text(out);
      pending.erase(0, pending.size() - hold);
      if (!go_on) {
        result.finish = FinishReason::kCancelled;
        break;
      }
    }
    if (stopped) {
      result.finish = FinishReason::kStop;
      break;
    }
    if (cache_.length() >= cache_.capacity()) {
      result.finish = FinishReason::kContextFull;
      break;
    }
    run(std::span<const model::TokenId>(&next, 1));
  }
  if (!pending.empty() && result.finish != FinishReason::kStop) {
    result.text += pending;
    // After a cancel the callback is not called again (its receiver may be gone).
    if (on_text && result.finish != FinishReason::kCancelled) on_text(pending);
  }
  result.timings.generated_tokens = static_cast<std::int64_t>(result.tokens.size());
  result.timings.eval_ms = (now_seconds() - start) * 1e3;
  return result;
}

}  // namespace nanochat::engine
