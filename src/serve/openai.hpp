// OpenAI's API shapes: requests for /v1/completions and /v1/chat/completions parsed and checked
// into engine options, and the JSON objects the server answers with (whole, and as streamed
// chunks), errors included.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/session.hpp"

namespace nanochat::serve {

// An error answered as OpenAI's error object with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault, when there is one
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}
nlohmann::json error_body(const ApiError& e);

struct CompletionRequest {
  bool chat = false;
  std::string model;                   // as asked (empty: any)
  std::string prompt_text;             // the prompt (chat: the rendered conversation)
  std::vector<model::TokenId> prompt;  // its tokens
  engine::GenerateOptions options;
  bool seed_given = false;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt before the answer
  bool logprobs = false;
  int top_logprobs = 0;
};

// Parses and checks a request body. Throws ApiError (400, naming the field) for malformed JSON,
// wrong types, out-of-range values and what nanochat does not do (tools, several prompts).
CompletionRequest parse_completion_request(const std::string& body, bool chat,
                                           const engine::LoadedModel& model, std::int64_t context);

// What the answers share.
struct ResponseInfo {
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  std::int64_t created = 0;
  std::string model;
  std::string fingerprint;
};

// OpenAI's finish_reason for an engine finish: "stop" or "length".
const char* finish_reason(engine::FinishReason r);

// The logprobs object of a choice for `entries` (OpenAI's chat or completions shape);
// `text_offset` is where the first entry's text starts (completions).
nlohmann::json logprobs_json(const engine::LoadedModel& model,
                             const std::vector<engine::TokenLogprob>& entries, bool chat,
                             std::size_t text_offset);

nlohmann::json usage_json(std::int64_t prompt_tokens, std::int64_t completion_tokens);

// JSON text that never throws on invalid UTF-8 (a token may be part of a character): such bytes
// become U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace nanochat::serve
