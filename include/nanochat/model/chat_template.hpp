// Chat templates: how a conversation becomes a prompt. The model's own template
// (tokenizer.chat_template, Jinja) is recognised by its markers and rendered by a built-in
// formatter for that family, as llama.cpp does: chatml, llama3, phi3, gemma, llama2, bitnet;
// models without a template get a plain "User: / Assistant:" format.
#pragma once

#include <string>
#include <vector>

namespace nanochat::model {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  // `jinja`: the model's tokenizer.chat_template (may be empty).
  static ChatTemplate detect(const std::string& jinja);
  static ChatTemplate named(const std::string& name);  // throws UsageError for unknown names

  const std::string& name() const { return name_; }
  // The prompt for `messages`, ending with the assistant's turn opener when `add_generation`.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation) const;
  // A Jinja text for tokenizer.chat_template that detect() recognises as this template and that
  // renders as render() does (chatml and plain; empty for the others).
  std::string jinja() const;
  // Text that ends the assistant's turn (besides EOS).
  const std::vector<std::string>& stop() const { return stop_; }

 private:
  std::string name_;
  std::vector<std::string> stop_;
};

}  // namespace nanochat::model
