#include "nanochat/engine/session.hpp"

#include <algorithm>

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

Session::Session(model::Model& model, const model::Tokenizer& tokenizer, std::int64_t context)
    : model_(model),
      tokenizer_(tokenizer),
      cache_(model.config(), context > 0 ? context : model.config().context_length) {
  if (static_cast<std::int64_t>(tokenizer.size()) != model.config().vocab_size) {
    fail<FormatError>("the tokenizer has {} tokens but the model's vocabulary has {}",
                      tokenizer.size(), model.config().vocab_size);
  }
}

GenerateResult Session::generate(std::string_view prompt, const GenerateOptions& options,
                                 const TextCallback& on_text) {
  if (prompt.empty()) fail<UsageError>("the prompt is empty; pass some text with -p or -f");
  options.sampling.validate();
  for (const auto& s : options.stop) {
    if (s.empty()) fail<UsageError>("--stop: an empty stop string would stop at once");
  }
  const std::vector<model::TokenId> prompt_ids =
      tokenizer_.encode(prompt, options.add_special, options.parse_special);
  if (prompt_ids.empty()) fail<UsageError>("the prompt encodes to no tokens");
  if (static_cast<std::int64_t>(prompt_ids.size()) >= cache_.capacity()) {
    fail<UsageError>(
        "the prompt has {} tokens but the context holds {}; raise -c (the model was "
        "trained for {}) or shorten the prompt",
        prompt_ids.size(), cache_.capacity(), model_.config().context_length);
  }
  model::Sampler sampler(options.sampling);
  GenerateResult result;
  result.timings.prompt_tokens = static_cast<std::int64_t>(prompt_ids.size());
  cache_.clear();

  std::vector<model::TokenId> history = prompt_ids;
  std::vector<float> logits;
  double start = now_seconds();
  model_.forward(prompt_ids, cache_, logits);
  result.timings.prompt_ms = (now_seconds() - start) * 1e3;

  std::string pending;  // generated text not yet passed to the callback
  start = now_seconds();
  const auto eos = tokenizer_.eos();
  for (;;) {
    if (options.n_predict >= 0 && static_cast<int>(result.tokens.size()) >= options.n_predict) {
      result.finish = FinishReason::kLength;
      break;
    }
    const model::TokenId next = sampler.sample(logits, history);
    if ((eos && next == *eos) || tokenizer_.token_type(next) == model::TokenType::kControl) {
      result.finish = FinishReason::kEos;
      break;
    }
    result.tokens.push_back(next);
    history.push_back(next);
    pending += tokenizer_.piece(next);

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
    model_.forward(std::span<const model::TokenId>(&next, 1), cache_, logits);
  }
  if (!pending.empty() && result.finish != FinishReason::kStop) {
    result.text += pending;
    if (on_text) on_text(pending);
  }
  result.timings.generated_tokens = static_cast<std::int64_t>(result.tokens.size());
  result.timings.eval_ms = (now_seconds() - start) * 1e3;
  return result;
}

}  // namespace nanochat::engine
