// A generation session: its own KV cache and sampler over a shared LoadedModel. The CLI, the
// server and the Python module all generate through this, streaming text through a callback.
// A session continues: each generate() reuses the cached keys and values of the longest common
// prefix of the new prompt and what the session has already run (a chat's earlier turns, a
// longer prompt), so a turn costs its new tokens, not the whole history.
//
// Thread-safety: one session is used by one thread at a time; sessions over the same
// LoadedModel may run on different threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/sampler.hpp"
#include "nanochat/model/tokenizer.hpp"

namespace nanochat::engine {

struct GenerateOptions {
  int n_predict = 128;  // -n; < 0: until the context is full
  model::SamplerParams sampling;
  std::vector<std::string> stop;  // --stop: generation ends before any of these
  bool add_special = true;        // BOS as the model asks
  bool parse_special = false;     // control tokens written in the prompt
  bool ignore_eos = false;        // never sample EOS or another control token (llama.cpp's flag)
  bool logprobs = false;          // record each generated token's log-probability
  int top_logprobs = 0;           // and this many most likely alternatives (0-20)

  // Throws InvalidArgument naming the bad parameter (n_predict, stop, the sampler's).
  void validate() const;
};

// Throws InvalidArgument ("context") unless `context` is 0 (the model's) or positive.
void validate_context(std::int64_t context);

enum class FinishReason { kLength, kEos, kStop, kContextFull, kCancelled };
const char* finish_reason_name(FinishReason r);

struct Timings {
  std::int64_t prompt_tokens = 0;  // the whole prompt
  std::int64_t reused_tokens = 0;  // of those, found in the cache (not run again)
  std::int64_t generated_tokens = 0;
  double prompt_ms = 0;  // prefill
  double eval_ms = 0;    // decode
  // Through the batch scheduler, from the request's submission: waiting for a slot, and until
  // the first generated token (time to first token).
  double queued_ms = 0;
  double first_token_ms = 0;
};

// A generated token's log-probability under the model (the log-softmax of its logits, before
// penalties and temperature), with the most likely alternatives when asked.
struct TokenLogprob {
  model::TokenId token = 0;
  float logprob = 0;
  std::vector<std::pair<model::TokenId, float>> top;  // most likely first
};

struct GenerateResult {
  std::string text;
  std::vector<model::TokenId> tokens;  // generated
  std::vector<TokenLogprob> logprobs;  // one per generated token, when options.logprobs
  FinishReason finish = FinishReason::kLength;
  Timings timings;
};

// Receives text as it is generated (whole UTF-8 characters, never part of a stop string);
// returning false stops generation (FinishReason::kCancelled).
using TextCallback = std::function<bool(std::string_view text)>;

// One answer being generated a token at a time, whatever runs the model (a Session, or the
// batch scheduler for many at once): sampling, EOS, stop strings, streaming whole characters.
class Decoder {
 public:
  // `prompt`: the tokens run before the first step (for the repetition penalty's history).
  // Throws InvalidArgument for bad options.
  Decoder(const LoadedModel& model, std::span<const model::TokenId> prompt,
          const GenerateOptions& options);
  // Takes the logits after the last token run and returns the token to run next, or nullopt
  // when the answer is done (result().finish says why). `room`: whether the cache can take
  // another token.
  std::optional<model::TokenId> step(std::span<const float> logits, bool room,
                                     const TextCallback& on_text);
  // Ends the answer as cancelled (nothing more reaches the callback).
  void cancel();
  bool done() const { return done_; }
  GenerateResult& result() { return result_; }

 private:
  void finish(FinishReason reason, const TextCallback& on_text);
  TokenLogprob token_logprob(std::span<const float> logits, model::TokenId token) const;

  const model::Tokenizer& tokenizer_;
  GenerateOptions options_;
  model::Sampler sampler_;
  std::vector<model::TokenId> history_;
  std::vector<model::TokenId> banned_;  // ignore_eos: the tokens that would end the answer
  std::string pending_;                 // generated text not yet passed to the callback
  std::vector<float> scratch_;          // logits with the banned tokens masked
  GenerateResult result_;
  bool done_ = false;
};

class Session {
 public:
  // `context`: KV cache size in tokens (0: the model's context length).
  explicit Session(std::shared_ptr<LoadedModel> model, std::int64_t context = 0);

  // Generates a continuation of `prompt` (encoded with options.add_special/parse_special).
  // Throws InvalidArgument ("prompt", "context") for an empty prompt or one that leaves no room
  // in the context.
  GenerateResult generate(std::string_view prompt, const GenerateOptions& options,
                          const TextCallback& on_text = {});
  // The same from tokens.
  GenerateResult generate_tokens(std::span<const model::TokenId> prompt,
                                 const GenerateOptions& options, const TextCallback& on_text = {});

  // The same a token at a time, for callers that pull text (Python's iterators): start() runs
  // the prompt (reusing the cached prefix; same errors as generate), each next() samples and runs
  // one token and returns its text (possibly empty, held back), or nullopt once the answer is
  // done; result() then holds it. cancel() ends it as cancelled.
  void start(std::span<const model::TokenId> prompt, const GenerateOptions& options);
  std::optional<std::string> next();
  void cancel();
  GenerateResult& result();

  std::int64_t context() const { return cache_.capacity(); }
  // The tokens whose keys and values the cache holds, in order.
  const std::vector<model::TokenId>& cached_tokens() const { return cached_; }
  // Forgets the cache (the next generate() runs its whole prompt).
  void reset();
  LoadedModel& model() { return *model_; }

 private:
  void run(std::span<const model::TokenId> tokens);

  std::shared_ptr<LoadedModel> model_;
  model::KvCache cache_;
  std::vector<model::TokenId> cached_;
  std::vector<float> logits_;
  std::optional<Decoder> decoder_;  // the current (or last) generation
};
}  // namespace nanochat::engine
