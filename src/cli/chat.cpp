// nanochat chat: a conversation in the terminal with line editing (libedit), history, streaming
// answers, the model's chat template, /help /clear /exit, and Ctrl-C to stop an answer without
// quitting. When stdin is not a terminal it answers one turn and exits — it never waits for a
// person who is not there.
#include <editline/readline.h>
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

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

const char* kHelp =
    "commands:\n"
    "  /help    this text\n"
    "  /clear   forget the conversation (the system prompt stays)\n"
    "  /exit    quit (or Ctrl-D)\n"
    "end a line with \\ to continue on the next one; Ctrl-C stops an answer\n";

void run(const Options& o) {
  int threads = 0;
  if (!o.kernel.threads.empty()) threads = parse_int_list(o.kernel.threads, "-t")[0];
  const model::SamplerParams sampling = o.sampling.resolve();
  const std::string model_path = zoo::model_or_default(o.model);
  const auto file = gguf::GgufFile::open(model_path);
  kernels::KernelContext ctx(o.kernel.options(threads));
  auto model = model::Model::load(file, ctx);
  const model::Tokenizer tokenizer = model::Tokenizer::from_gguf(file);
  engine::Session session(*model, tokenizer, o.context);
  const model::ChatTemplate tmpl =
      o.chat_template.empty()
          ? model::ChatTemplate::detect(file.get_string("tokenizer.chat_template").value_or(""))
          : model::ChatTemplate::named(o.chat_template);

  std::vector<model::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  engine::GenerateOptions g;
  g.n_predict = o.n_predict;
  g.sampling = sampling;
  g.stop = tmpl.stop();
  g.parse_special = true;  // the template's markers are control tokens

  auto answer = [&](const std::string& user) {
    messages.push_back({"user", user});
    g_interrupted.store(false);
    const engine::GenerateResult r =
        session.generate(tmpl.render(messages, true), g, [](std::string_view text) {
          std::fwrite(text.data(), 1, text.size(), stdout);
          std::fflush(stdout);
          return !g_interrupted.load();
        });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    messages.push_back({"assistant", r.text});
    if (r.finish == engine::FinishReason::kCancelled) fmt::print(stderr, "[stopped]\n");
    if (r.finish == engine::FinishReason::kContextFull) {
      fmt::print(stderr, "[the context is full: /clear to start over, or raise -c]\n");
    }
  };

  if (!::isatty(0)) {  // scripted: one turn
    const std::string input((std::istreambuf_iterator<char>(std::cin)),
                            std::istreambuf_iterator<char>());
    if (input.find_first_not_of(" \t\r\n") == std::string::npos) {
      fail<UsageError>("stdin is empty: pipe the message to answer, or run chat in a terminal");
    }
    answer(input);
    return;
  }

  const bool color = !o.no_color && ::isatty(1);
  const std::string prompt = color ? "\001\033[1;32m\002> \001\033[0m\002" : "> ";
  const std::string history = (cache_dir() / "chat_history").string();
  std::error_code ec;
  std::filesystem::create_directories(cache_dir(), ec);
  using_history();
  read_history(history.c_str());
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, nullptr);
  fmt::print(stderr, "nanochat chat: {} ({} template, context {}). /help for commands.\n",
             model_path, tmpl.name(), session.context());
  for (;;) {
    g_interrupted.store(false);
    char* raw = readline(prompt.c_str());
    if (raw == nullptr) {
      if (g_interrupted.load()) {  // Ctrl-C at the prompt: a fresh line, not an exit
        std::fputs("\n", stdout);
        continue;
      }
      break;  // Ctrl-D
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
      continue;
    }
    if (line == "/clear") {
      messages.clear();
      if (!o.system.empty()) messages.push_back({"system", o.system});
      fmt::print(stderr, "[conversation cleared]\n");
      continue;
    }
    if (line[0] == '/') {
      fmt::print(stderr, "unknown command {}; /help lists them\n", line);
      continue;
    }
    answer(line);
  }
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
      ->capture_default_str();
  sub->add_flag("--no-color", o->no_color, "No colours even on a terminal");
  o->sampling.add_to(*sub);
  o->kernel.add_to(*sub, false);
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
