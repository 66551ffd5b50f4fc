// nanochat chat: a conversation in the terminal with line editing (libedit), history, streaming
// answers, the model's chat template, /help /clear /stats /exit, and Ctrl-C to stop an answer
// without quitting. The conversation stays in the session's KV cache, so a turn costs its new
// tokens. When stdin is not a terminal it answers one turn and exits — it never waits for a
// person who is not there.
#include <editline/readline.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  std::string system;
  std::string chat_template;
  int n_predict = -1;
  std::int64_t context = 0;
  bool no_color = false;
  SamplingFlags sampling;
  KernelFlags kernel;
};

constexpr const char* kHelp =
    "commands:\n"
    "  /help    this text\n"
    "  /clear   forget the conversation (the system prompt stays)\n"
    "  /stats   timings of the last answer and of the whole conversation\n"
    "  /exit    quit (or Ctrl-D)\n"
    "end a line with \\ to continue on the next one; Ctrl-C stops an answer\n";

// A conversation over one session: each turn renders the whole conversation with the template,
// and the session reuses the cached keys and values of everything before the new turn. When the
// context cannot hold the conversation and room for an answer, the oldest turns are dropped
// (the system prompt stays) and the user is told.
class Conversation {
 public:
  Conversation(engine::Session& session, std::string system, engine::GenerateOptions options)
      : session_(session), system_(std::move(system)), options_(std::move(options)) {
    clear();
  }

  void clear() {
    messages_.clear();
    if (!system_.empty()) messages_.push_back({"system", system_});
  }

  // Answers `user`, streaming the answer to stdout. A message too long for the context is not
  // sent: the conversation stays as it was, and the reason is returned (empty when answered).
  std::string answer(const std::string& user) {
    messages_.push_back({"user", user});
    std::string refused;
    const std::vector<model::TokenId> prompt = fit_prompt(refused);
    if (prompt.empty()) return refused;
    clear_interrupted();
    const engine::GenerateResult r =
        session_.generate_tokens(prompt, options_, [](std::string_view text) {
          std::fwrite(text.data(), 1, text.size(), stdout);
          std::fflush(stdout);
          return !interrupted();
        });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    messages_.push_back({"assistant", r.text});
    last_ = r.timings;
    last_finish_ = r.finish;
    total_.prompt_tokens += r.timings.prompt_tokens;
    total_.reused_tokens += r.timings.reused_tokens;
    total_.prompt_ms += r.timings.prompt_ms;
    total_.generated_tokens += r.timings.generated_tokens;
    total_.eval_ms += r.timings.eval_ms;
    ++turns_;
    if (r.finish == engine::FinishReason::kCancelled) fmt::print(stderr, "[stopped]\n");
    if (r.finish == engine::FinishReason::kContextFull) {
      fmt::print(stderr,
                 "[the context is full: the answer was cut; the oldest turns will make room for "
                 "the next one]\n");
    }
    return {};
  }

  void print_stats(std::uint64_t seed) const {
    if (turns_ == 0) {
      fmt::print(stderr, "[no answers yet]\n");
      return;
    }
    fmt::print(stderr, "last answer:\n");
    print_timings(last_, 0, engine::finish_reason_name(last_finish_), seed);
    fmt::print(stderr, "conversation ({} answers):\n", turns_);
    print_timings(total_, 0, nullptr, seed);
  }
  int turns() const { return turns_; }

 private:
  // The rendered conversation as tokens, with room for an answer. When it does not fit, the
  // oldest turns (a user message and the answers after it) are dropped, the system prompt kept;
  // when even the new message alone does not fit, the conversation is left as it was and the
  // message is not sent.
  std::vector<model::TokenId> fit_prompt(std::string& refused) {
    const engine::LoadedModel& m = session_.model();
    const std::int64_t context = session_.context();
    const std::int64_t room = options_.n_predict > 0
                                  ? std::min<std::int64_t>(options_.n_predict, context / 2)
                                  : std::max<std::int64_t>(context / 4, 1);
    const auto encode = [&](const std::vector<model::ChatMessage>& msgs) {
      return m.tokenizer().encode(m.chat_template().render(msgs, true), true, true);
    };
    const auto fits = [&](const std::vector<model::TokenId>& t) {
      return static_cast<std::int64_t>(t.size()) + room <= context;
    };
    const std::size_t first = system_.empty() ? 0 : 1;
    std::vector<model::ChatMessage> alone(messages_.begin(),
                                          messages_.begin() + static_cast<std::ptrdiff_t>(first));
    alone.push_back(messages_.back());
    const std::vector<model::TokenId> minimal = encode(alone);
    if (!fits(minimal)) {
      refused = fmt::format(
          "this message takes {} tokens; with room for an answer it does not fit the context of "
          "{} tokens: shorten it, or {} a larger -c",
          minimal.size(), context, ::isatty(0) ? "restart with" : "pass");
      messages_.pop_back();
      return {};
    }
    int dropped = 0;
    for (;;) {
      std::vector<model::TokenId> tokens = encode(messages_);
      if (fits(tokens)) {
        if (dropped > 0) {
          fmt::print(stderr, "[the context of {} tokens is full: dropped the oldest {} {}]\n",
                     context, dropped, dropped == 1 ? "turn" : "turns");
        }
        return tokens;
      }
      // One turn: the first message after the system prompt and everything up to the next user
      // message (the new message is always kept, so this ends).
      auto end = messages_.begin() + static_cast<std::ptrdiff_t>(first) + 1;
      while (end != messages_.end() - 1 && end->role != "user") ++end;
      messages_.erase(messages_.begin() + static_cast<std::ptrdiff_t>(first), end);
      ++dropped;
    }
  }

  engine::Session& session_;
  std::string system_;
  engine::GenerateOptions options_;
  std::vector<model::ChatMessage> messages_;
  engine::Timings last_, total_;
  engine::FinishReason last_finish_ = engine::FinishReason::kLength;
  int turns_ = 0;
};

void run(const Options& o) {
  engine::GenerateOptions g;
  g.n_predict = o.n_predict;
  g.sampling = o.sampling.resolve();
  g.parse_special = true;  // the template's markers are control tokens
  g.validate();
  engine::validate_context(o.context);
  const auto model = load_model(o.model, o.kernel, o.chat_template);
  engine::Session session(model, o.context);  // checks the context's memory first
  warn_context(*model, o.context);
  g.stop = model->chat_template().stop();
  Conversation chat(session, o.system, g);

  if (!::isatty(0)) {  // scripted: one turn
    const std::string input((std::istreambuf_iterator<char>(std::cin)),
                            std::istreambuf_iterator<char>());
    if (input.find_first_not_of(" \t\r\n") == std::string::npos) {
      fail<UsageError>("stdin is empty: pipe the message to answer, or run chat in a terminal");
    }
    // The line ending(s) `echo` and files end with are not part of the message: a terminal's
    // line, the server and Python send it without them, and the template's newline follows.
    const std::string message = input.substr(0, input.find_last_not_of("\r\n") + 1);
    if (const std::string refused = chat.answer(message); !refused.empty()) {
      fail<UsageError>("{}", refused);
    }
    return;
  }

  const bool color = !o.no_color && ::isatty(1);
  // \001 and \002 tell libedit that the escapes between them take no room on the screen.
  const std::string prompt = color ? "\001\033[1;32m\002>\001\033[0m\002 " : "> ";
  const std::string history = (cache_dir() / "chat_history").string();
  std::error_code ec;
  std::filesystem::create_directories(cache_dir(), ec);
  using_history();
  read_history(history.c_str());
  catch_interrupts();
  fmt::print(stderr, "nanochat chat: {} ({} template, context {}). /help for commands.\n",
             model->path().string(), model->chat_template().name(), session.context());
  for (;;) {
    clear_interrupted();
    catch_interrupts();  // again: the handler resets itself after each Ctrl-C
    char* raw = readline(prompt.c_str());
    if (raw == nullptr) {
      std::fputs("\n", stdout);     // the shell's prompt starts on a fresh line
      if (interrupted()) continue;  // Ctrl-C at the prompt: a fresh line, not an exit
      break;                        // Ctrl-D
    }
    std::string line(raw);
    std::free(raw);
    while (!line.empty() && line.back() == '\\') {
      line.back() = '\n';
      char* more = readline("... ");
      if (more == nullptr) break;
      line += more;
      std::free(more);
    }
    if (line.find_first_not_of(" \t\n") == std::string::npos) continue;
    add_history(line.c_str());
    write_history(history.c_str());
    if (line == "/exit" || line == "/quit") break;
    if (line == "/help") {
      fmt::print(stderr, "{}", kHelp);
    } else if (line == "/stats") {
      chat.print_stats(g.sampling.seed);
    } else if (line == "/clear") {
      chat.clear();
      fmt::print(stderr, "[conversation cleared]\n");
    } else if (line[0] == '/') {
      fmt::print(stderr, "unknown command {}; /help lists them\n", line);
    } else if (const std::string refused = chat.answer(line); !refused.empty()) {
      fmt::print(stderr, "[{}]\n", refused);
    }
  }
  if (color) std::fputs("\033[0m", stdout);
  std::fflush(stdout);
  chat.print_stats(g.sampling.seed);
}

}  // namespace

void add_chat(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("chat", "Chat with a model in the terminal");
  sub->add_option("-m,--model", o->model,
                  "GGUF model file (default: the shipped nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  // llama.cpp's -sys is accepted too: main() rewrites it to --system-prompt (CLI11 2.1 does not
  // allow multi-letter single-dash names).
  sub->add_option("--system-prompt", o->system, "System prompt (also -sys)");
  sub->add_option(
      "--chat-template", o->chat_template,
      "Override the model's template: chatml, llama3, phi3, gemma, llama2, bitnet, plain");
  sub->add_option("-n,--n-predict", o->n_predict, "Most tokens per answer (-1: no limit)")
      ->capture_default_str();
  sub->add_option("-c,--ctx-size", o->context, "Context size in tokens (0: the model's)")
      ->capture_default_str()
      ->envname("NANOCHAT_ARG_CTX_SIZE");
  sub->add_flag("--no-color", o->no_color, "No colours even on a terminal");
  o->sampling.add_to(*sub);
  o->kernel.add_to(*sub, false);
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
