// nanochat generate: continue a prompt with a model, streaming tokens to stdout and timings to
// stderr (or one JSON object on stdout with --json). Ctrl-C stops the generation: what was
// generated, the timings and the seed are printed, and the exit code is 130.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  std::string prompt;
  std::string file;
  int n_predict = 128;
  std::int64_t context = 0;
  std::vector<std::string> stop;
  bool json = false;
  bool special = false;
  bool ignore_eos = false;
  SamplingFlags sampling;
  KernelFlags kernel;
};

void run(Options o, bool prompt_given) {
  engine::GenerateOptions g;
  g.n_predict = o.n_predict;
  g.sampling = o.sampling.resolve();
  g.stop = o.stop;
  g.parse_special = o.special;
  g.ignore_eos = o.ignore_eos;
  g.validate();
  engine::validate_context(o.context);
  const std::string prompt = read_text_input(o.prompt, prompt_given, o.file, true);

  const auto model = load_model(o.model, o.kernel);
  engine::Session session(model, o.context);  // checks the context's memory first
  warn_context(*model, o.context);
  catch_interrupts();
  const engine::GenerateResult r = session.generate(prompt, g, [&o](std::string_view text) {
    if (!o.json) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    return !interrupted();
  });
  const auto& t = r.timings;
  if (o.json) {
    const std::int64_t run_tokens = t.prompt_tokens - t.reused_tokens;
    const nlohmann::json doc = {
        {"text", r.text},
        {"tokens", r.tokens},
        {"token_count", r.tokens.size()},
        {"finish_reason", engine::finish_reason_name(r.finish)},
        {"seed", g.sampling.seed},
        {"timings",
         {{"load_ms", model->load_ms()},
          {"prompt_tokens", t.prompt_tokens},
          {"prompt_ms", t.prompt_ms},
          {"prompt_tokens_per_second", tokens_per_second(t.prompt_ms, run_tokens)},
          {"eval_tokens", t.generated_tokens},
          {"eval_ms", t.eval_ms},
          {"eval_ms_per_token", ms_per_token(t.eval_ms, t.generated_tokens)},
          {"eval_tokens_per_second", tokens_per_second(t.eval_ms, t.generated_tokens)}}}};
    std::puts(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs("\n", stdout);
    std::fflush(stdout);
    fmt::print(stderr, "\n");
    print_timings(t, model->load_ms(), engine::finish_reason_name(r.finish), g.sampling.seed);
  }
  if (r.finish == engine::FinishReason::kCancelled) throw Interrupted{};
}

}  // namespace

void add_generate(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("generate", "Continue a prompt with a model");
  sub->add_option("-m,--model", opts->model,
                  "GGUF model file (default: the shipped nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  auto* prompt = sub->add_option("-p,--prompt", opts->prompt, "Prompt text");
  sub->add_option("-f,--file", opts->file, "File with the prompt (else -p, else stdin)");
  sub->add_option("-n,--n-predict", opts->n_predict,
                  "Tokens to generate (-1: until the context is full)")
      ->capture_default_str();
  sub->add_option("-c,--ctx-size", opts->context, "Context size in tokens (0: the model's)")
      ->capture_default_str()
      ->envname("NANOCHAT_ARG_CTX_SIZE");
  opts->sampling.add_to(*sub);
  sub->add_option("--stop", opts->stop, "Stop before this text (repeatable)");
  sub->add_flag("--json", opts->json,
                "Print one JSON object (text, tokens, timings, finish reason)");
  sub->add_flag("--special", opts->special, "Parse control tokens written in the prompt");
  sub->add_flag("--ignore-eos", opts->ignore_eos,
                "Never end at EOS or another control token (until -n or the context)");
  opts->kernel.add_to(*sub, false);
  sub->callback([opts, prompt] { run(*opts, prompt->count() > 0); });
}

}  // namespace nanochat::cli
