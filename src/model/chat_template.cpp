#include "nanochat/model/chat_template.hpp"

#include <cctype>

#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

bool has(const std::string& s, const char* marker) { return s.find(marker) != std::string::npos; }

std::string capitalized(std::string role) {
  if (!role.empty()) role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(role[0])));
  return role;
}

}  // namespace

ChatTemplate ChatTemplate::named(const std::string& name) {
  ChatTemplate t;
  t.name_ = name;
  if (name == "chatml") {
    t.stop_ = {"<|im_end|>"};
  } else if (name == "llama3" || name == "bitnet") {
    t.stop_ = {"<|eot_id|>"};
  } else if (name == "phi3") {
    t.stop_ = {"<|end|>"};
  } else if (name == "gemma") {
    t.stop_ = {"<end_of_turn>"};
  } else if (name == "llama2") {
    t.stop_ = {"</s>"};
  } else if (name == "plain") {
    t.stop_ = {"\nUser:"};
  } else {
    fail<UsageError>(
        "chat template '{}' is unknown; use chatml, llama3, phi3, gemma, llama2, "
        "bitnet or plain",
        name);
  }
  return t;
}

std::string ChatTemplate::jinja() const {
  if (name_ == "chatml") {
    return "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] "
           "}}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% "
           "endif %}";
  }
  if (name_ == "plain") {
    return "{% for message in messages %}{{ message['role'] | capitalize }}: {{ "
           "message['content'] }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif "
           "%}";
  }
  return "";
}

ChatTemplate ChatTemplate::detect(const std::string& j) {
  if (has(j, "<|im_start|>")) return named("chatml");
  if (has(j, "<|start_header_id|>")) return named("llama3");
  if (has(j, "<|eot_id|>")) return named("bitnet");
  if (has(j, "<|assistant|>") && has(j, "<|end|>")) return named("phi3");
  if (has(j, "<start_of_turn>")) return named("gemma");
  if (has(j, "[INST]")) return named("llama2");
  return named("plain");
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation) const {
  std::string out;
  if (name_ == "chatml") {
    for (const auto& m : messages)
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation) out += "<|im_start|>assistant\n";
  } else if (name_ == "llama3") {
    for (const auto& m : messages) {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
    }
    if (add_generation) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  } else if (name_ == "bitnet") {
    for (const auto& m : messages) out += capitalized(m.role) + ": " + m.content + "<|eot_id|>";
    if (add_generation) out += "Assistant: ";
  } else if (name_ == "phi3") {
    for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
    if (add_generation) out += "<|assistant|>\n";
  } else if (name_ == "gemma") {
    std::string system;
    for (const auto& m : messages) {
      if (m.role == "system") {
        system = m.content + "\n\n";  // gemma has no system turn: prepend to the first user turn
        continue;
      }
      const std::string role = m.role == "assistant" ? "model" : m.role;
      out += "<start_of_turn>" + role + "\n" + (role == "user" ? system : "") + m.content +
             "<end_of_turn>\n";
      if (role == "user") system.clear();
    }
    if (add_generation) out += "<start_of_turn>model\n";
  } else if (name_ == "llama2") {
    std::string system;
    for (const auto& m : messages) {
      if (m.role == "system") {
        system = "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n";
      } else if (m.role == "user") {
        out += "[INST] " + system + m.content + " [/INST]";
        system.clear();
      } else {
        out += " " + m.content + " </s><s>";
      }
    }
  } else {  // plain
    for (const auto& m : messages) out += capitalized(m.role) + ": " + m.content + "\n";
    if (add_generation) out += "Assistant:";
  }
  return out;
}

}  // namespace nanochat::model
