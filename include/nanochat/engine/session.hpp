// A generation session: tokenizer + model + sampler + KV cache. The CLI, the server and the
// Python module all generate through this, streaming text through a callback.
//
// Thread-safety: one session is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

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
};

enum class FinishReason { kLength, kEos, kStop, kContextFull, kCancelled };
const char* finish_reason_name(FinishReason r);

struct Timings {
  std::int64_t prompt_tokens = 0;
  std::int64_t generated_tokens = 0;
  double prompt_ms = 0;  // prefill
  double eval_ms = 0;    // decode
};

struct GenerateResult {
  std::string text;
  std::vector<model::TokenId> tokens;  // generated
  FinishReason finish = FinishReason::kLength;
  Timings timings;
};

// Receives text as it is generated (whole UTF-8 characters, never part of a stop string);
// returning false stops generation (FinishReason::kCancelled).
using TextCallback = std::function<bool(std::string_view text)>;

class Session {
 public:
  // `context`: KV cache size in tokens (0: the model's context length).
  Session(model::Model& model, const model::Tokenizer& tokenizer, std::int64_t context = 0);

  // Generates a continuation of `prompt` from an empty context. Throws UsageError for an empty
  // prompt or one longer than the context.
  GenerateResult generate(std::string_view prompt, const GenerateOptions& options,
                          const TextCallback& on_text = {});

  std::int64_t context() const { return cache_.capacity(); }

 private:
  model::Model& model_;
  const model::Tokenizer& tokenizer_;
  model::KvCache cache_;
};

}  // namespace nanochat::engine
