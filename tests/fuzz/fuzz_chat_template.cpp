// libFuzzer target for chat templates: a fuzzed tokenizer.chat_template (before the first NUL)
// is recognised or falls back, and renders fuzzed messages (the rest, split at 0x01) without a
// crash; every user and assistant message's content appears in the prompt (a system message may
// be folded into the first user turn, or dropped by templates without one when no user turn
// follows).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "nanochat/model/chat_template.hpp"
#include "nanochat/util/error.hpp"

using namespace nanochat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string jinja(input.substr(0, nul));
  std::vector<model::ChatMessage> messages;
  if (nul != std::string_view::npos) {
    std::string_view rest = input.substr(nul + 1);
    static constexpr const char* kRoles[] = {"system", "user", "assistant", "user"};
    for (std::size_t i = 0;; ++i) {
      const std::size_t cut = rest.find('\x01');
      messages.push_back({kRoles[i % 4], std::string(rest.substr(0, cut))});
      if (cut == std::string_view::npos) break;
      rest = rest.substr(cut + 1);
    }
  }
  try {
    const auto tmpl = model::ChatTemplate::detect(jinja);
    const std::string prompt = tmpl.render(messages, true);
    for (const auto& m : messages) {
      if (m.role != "system" && prompt.find(m.content) == std::string::npos) std::abort();
    }
  } catch (const Error&) {
  }
  return 0;
}
