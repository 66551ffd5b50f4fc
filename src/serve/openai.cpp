#include "openai.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "nanochat/model/chat_template.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::serve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError{400, message, "invalid_request_error", param, ""};
}

// The request's fields, read with their types and ranges checked; null counts as absent.
class Fields {
 public:
  explicit Fields(const json& j) : j_(j) {}

  const json* find(const char* name) const {
    const auto it = j_.find(name);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> number(const char* name, double lo, double hi) const {
    const json* v = find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number())
      bad(name, fmt::format("'{}' must be a number, not {}", name, v->type_name()));
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < lo || x > hi) {
      bad(name, fmt::format("'{}' must be between {} and {}, not {}", name, lo, hi, v->dump()));
    }
    return x;
  }
  std::optional<std::int64_t> integer(const char* name, std::int64_t lo, std::int64_t hi) const {
    const json* v = find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) {
      bad(name, fmt::format("'{}' must be an integer, not {}", name, v->dump()));
    }
    // Unsigned values past int64's range are refused, not wrapped.
    if (v->is_number_unsigned() &&
        v->get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      bad(name, fmt::format("'{}' must be between {} and {}, not {}", name, lo, hi, v->dump()));
    }
    const auto x = v->get<std::int64_t>();
    if (x < lo || x > hi) {
      bad(name, fmt::format("'{}' must be between {} and {}, not {}", name, lo, hi, x));
    }
    return x;
  }
  std::optional<bool> boolean(const char* name) const {
    const json* v = find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean())
      bad(name, fmt::format("'{}' must be true or false, not {}", name, v->dump()));
    return v->get<bool>();
  }
  std::optional<std::string> string(const char* name) const {
    const json* v = find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string())
      bad(name, fmt::format("'{}' must be a string, not {}", name, v->type_name()));
    return v->get<std::string>();
  }
  // Present and not empty (an empty list or object counts as absent).
  bool given(const char* name) const {
    const json* v = find(name);
    return v != nullptr && !((v->is_array() || v->is_object() || v->is_string()) && v->empty());
  }

 private:
  const json& j_;
};

std::vector<std::string> stop_strings(const Fields& f) {
  const json* v = f.find("stop");
  if (v == nullptr) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 16)
      bad("stop", fmt::format("'stop' has {} strings; give at most 16", v->size()));
    for (const json& s : *v) {
      if (!s.is_string()) bad("stop", "'stop' must be a string or a list of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad("stop", "'stop' must be a string or a list of strings");
  }
  for (const auto& s : out) {
    if (s.empty()) bad("stop", "'stop' strings must not be empty");
  }
  return out;
}

// A message's content: a string, or a list of parts of which the text parts are joined.
std::string message_content(const json& m, std::size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  const auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) bad(param, fmt::format("'{}' must be a string or a list of parts", param));
  std::string text;
  for (const json& part : *it) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      bad(param,
          fmt::format("'{}' may only hold text parts ({{\"type\": \"text\", \"text\": ...}}); "
                      "nanochat's models read text",
                      param));
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<model::ChatMessage> chat_messages(const json& j) {
  const auto it = j.find("messages");
  if (it == j.end() || it->is_null()) bad("messages", "'messages' is required");
  if (!it->is_array() || it->empty()) bad("messages", "'messages' must be a non-empty list");
  std::vector<model::ChatMessage> out;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object())
      bad(fmt::format("messages[{}]", i), fmt::format("'messages[{}]' must be an object", i));
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      bad(fmt::format("messages[{}].role", i), fmt::format("'messages[{}].role' is required", i));
    }
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant") {
      bad(fmt::format("messages[{}].role", i),
          fmt::format("'messages[{}].role' is '{}'; nanochat takes system, developer, user and "
                      "assistant messages",
                      i, r));
    }
    out.push_back({r, message_content(m, i)});
  }
  return out;
}

// The completions prompt: a string, a list of one string, a list of token ids, or a list of
// one such list.
void completion_prompt(const json& j, const engine::LoadedModel& model, CompletionRequest& r) {
  const auto it = j.find("prompt");
  if (it == j.end() || it->is_null()) bad("prompt", "'prompt' is required");
  const json* p = &*it;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) {
    p = &(*p)[0];
  } else if (p->is_array() && !p->empty() && !(*p)[0].is_number_integer()) {
    bad("prompt", fmt::format("'prompt' holds {} prompts; send one prompt per request (use 'n' "
                              "for several answers)",
                              p->size()));
  }
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
    r.prompt = model.tokenizer().encode(r.prompt_text, true, true);
    return;
  }
  if (!p->is_array() || p->empty())
    bad("prompt", "'prompt' must be a string or a list of token ids");
  const auto vocab = model.config().vocab_size;
  for (const json& t : *p) {
    if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || t.get<std::int64_t>() >= vocab) {
      bad("prompt", fmt::format("'prompt' token {} is not a token id of this model (0 to {})",
                                t.dump(), vocab - 1));
    }
    r.prompt.push_back(static_cast<model::TokenId>(t.get<std::int64_t>()));
  }
  r.prompt_text = model.tokenizer().decode(r.prompt);
}

}  // namespace

json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

CompletionRequest parse_completion_request(const std::string& body, bool chat,
                                           const engine::LoadedModel& model, std::int64_t context) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // syntax, invalid UTF-8, numbers out of range
    // nlohmann's text after its "[json.exception.parse_error.101] " tag: where, and what.
    std::string what = e.what();
    if (what.rfind("[json.exception.", 0) == 0 && what.find("] ") != std::string::npos) {
      what.erase(0, what.find("] ") + 2);
    }
    bad("", fmt::format("the request body is not valid JSON: {}", what));
  }
  if (!j.is_object()) bad("", "the request body must be a JSON object");
  const Fields f(j);
  CompletionRequest r;
  r.chat = chat;
  r.model = f.string("model").value_or("");

  for (const char* unsupported : {"tools", "functions", "tool_choice", "function_call"}) {
    if (f.given(unsupported)) {
      bad(unsupported, fmt::format("'{}': nanochat's models do not call tools", unsupported));
    }
  }
  if (const json* rf = f.find("response_format")) {
    if (!rf->is_object() || rf->value("type", "text") != "text") {
      bad("response_format", "'response_format': nanochat answers in text only");
    }
  }
  if (f.given("logit_bias")) bad("logit_bias", "'logit_bias' is not supported");
  if (!chat && f.given("suffix")) bad("suffix", "'suffix' (fill in the middle) is not supported");

  engine::GenerateOptions& g = r.options;
  constexpr std::int64_t kHuge = std::numeric_limits<std::int32_t>::max();
  auto max_tokens = f.integer("max_tokens", 0, kHuge);
  if (const auto m = f.integer("max_completion_tokens", 0, kHuge)) max_tokens = m;
  // OpenAI's defaults: 16 tokens for completions, until the answer ends for chat. More than the
  // context can hold ends at the context ("length").
  g.n_predict = static_cast<int>(max_tokens.value_or(chat ? -1 : 16));
  r.n = static_cast<int>(f.integer("n", 1, 16).value_or(1));
  if (const auto best_of = f.integer("best_of", 1, 16); best_of && *best_of != r.n) {
    bad("best_of", "'best_of' other than 'n' is not supported");
  }
  // Absent sampling fields take nanochat's defaults (llama.cpp's), as llama-server does.
  if (const auto t = f.number("temperature", 0, 2)) g.sampling.temperature = static_cast<float>(*t);
  if (const auto p = f.number("top_p", 0, 1)) {
    if (*p == 0) {
      g.sampling.temperature = 0;  // nothing but the most likely token
    } else {
      g.sampling.top_p = static_cast<float>(*p);
    }
  }
  if (const auto k = f.integer("top_k", 0, kHuge)) g.sampling.top_k = static_cast<int>(*k);
  if (const auto m = f.number("min_p", 0, 1)) g.sampling.min_p = static_cast<float>(*m);
  if (const auto p = f.number("repeat_penalty", 0.01, 100)) {
    g.sampling.repeat_penalty = static_cast<float>(*p);
  }
  if (const auto p = f.number("presence_penalty", -2, 2)) {
    g.sampling.presence_penalty = static_cast<float>(*p);
  }
  if (const auto p = f.number("frequency_penalty", -2, 2)) {
    g.sampling.frequency_penalty = static_cast<float>(*p);
  }
  if (const auto s = f.integer("seed", std::numeric_limits<std::int64_t>::min(),
                               std::numeric_limits<std::int64_t>::max())) {
    g.sampling.seed = static_cast<std::uint64_t>(*s);
    r.seed_given = true;
  }
  g.stop = stop_strings(f);
  g.ignore_eos = f.boolean("ignore_eos").value_or(false);  // llama-server's extension
  r.stream = f.boolean("stream").value_or(false);
  if (const json* so = f.find("stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    r.include_usage = Fields(*so).boolean("include_usage").value_or(false);
  }

  if (chat) {
    r.logprobs = f.boolean("logprobs").value_or(false);
    r.top_logprobs = static_cast<int>(f.integer("top_logprobs", 0, 20).value_or(0));
    if (r.top_logprobs > 0 && !r.logprobs) {
      bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    const auto messages = chat_messages(j);
    r.prompt_text = model.chat_template().render(messages, true);
    r.prompt = model.tokenizer().encode(r.prompt_text, true, true);
    for (const auto& s : model.chat_template().stop()) g.stop.push_back(s);
  } else {
    r.echo = f.boolean("echo").value_or(false);
    if (const json* lp = f.find("logprobs"); lp != nullptr && lp->is_boolean()) {
      r.logprobs = lp->get<bool>();  // some clients send a flag
    } else if (const auto n = f.integer("logprobs", 0, 20)) {
      r.logprobs = true;
      r.top_logprobs = static_cast<int>(*n);
    }
    completion_prompt(j, model, r);
  }
  g.logprobs = r.logprobs;
  g.top_logprobs = r.top_logprobs;

  const char* prompt_param = chat ? "messages" : "prompt";
  if (r.prompt.empty()) bad(prompt_param, fmt::format("'{}' is empty", prompt_param));
  if (static_cast<std::int64_t>(r.prompt.size()) >= context) {
    throw ApiError{400,
                   fmt::format("the prompt has {} tokens, but a slot's context holds {} (with room "
                               "for at least one generated token); shorten it, or start the "
                               "server with a larger -c",
                               r.prompt.size(), context),
                   "invalid_request_error", prompt_param, "context_length_exceeded"};
  }
  try {
    g.validate();
  } catch (const InvalidArgument& e) {
    bad(e.parameter(), e.what());
  }
  return r;
}

const char* finish_reason(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kLength:
    case engine::FinishReason::kContextFull:
      return "length";
    case engine::FinishReason::kEos:
    case engine::FinishReason::kStop:
    case engine::FinishReason::kCancelled:
      return "stop";
  }
  return "stop";
}

json usage_json(std::int64_t prompt_tokens, std::int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json logprobs_json(const engine::LoadedModel& model,
                   const std::vector<engine::TokenLogprob>& entries, bool chat,
                   std::size_t text_offset) {
  const auto& tok = model.tokenizer();
  const auto bytes = [](const std::string& s) {
    json b = json::array();
    for (const char c : s) b.push_back(static_cast<unsigned char>(c));
    return b;
  };
  if (chat) {
    json content = json::array();
    for (const auto& e : entries) {
      json top = json::array();
      for (const auto& [id, lp] : e.top) {
        const std::string piece = tok.piece(id);
        top.push_back({{"token", piece}, {"logprob", lp}, {"bytes", bytes(piece)}});
      }
      const std::string piece = tok.piece(e.token);
      content.push_back({{"token", piece},
                         {"logprob", e.logprob},
                         {"bytes", bytes(piece)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  std::size_t offset = text_offset;
  for (const auto& e : entries) {
    const std::string piece = tok.piece(e.token);
    tokens.push_back(piece);
    token_logprobs.push_back(e.logprob);
    json alternatives = json::object();
    for (const auto& [id, lp] : e.top) alternatives[tok.piece(id)] = lp;
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace nanochat::serve
