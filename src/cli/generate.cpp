// nanochat generate: continue a prompt with a model, streaming tokens to stdout and timings to
// stderr (or one JSON object on stdout with --json).
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/zoo/default_model.hpp"

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
  SamplingFlags sampling;
  KernelFlags kernel;
};

void run(Options o, bool prompt_given) {
  const std::string prompt = read_text_input(o.prompt, prompt_given, o.file, true);
  if (o.n_predict < -1)
    fail<UsageError>("-n {}: use -1 (until the context is full) or more", o.n_predict);
  if (o.context < 0) fail<UsageError>("-c {}: must be 0 (the model's) or positive", o.context);
  const model::SamplerParams sampling = o.sampling.resolve();
  int threads = 0;
  if (!o.kernel.threads.empty()) threads = parse_int_list(o.kernel.threads, "-t")[0];

  const double load_start = now_seconds();
  const auto file = gguf::GgufFile::open(zoo::model_or_default(o.model));
  kernels::KernelContext ctx(o.kernel.options(threads));
  auto model = model::Model::load(file, ctx);
  const model::Tokenizer tokenizer = model::Tokenizer::from_gguf(file);
  engine::Session session(*model, tokenizer, o.context);
  const double load_ms = (now_seconds() - load_start) * 1e3;

  engine::GenerateOptions g;
  g.n_predict = o.n_predict;
  g.sampling = sampling;
  g.stop = o.stop;
  g.parse_special = o.special;
  engine::TextCallback stream;
  if (!o.json) {
    stream = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    };
  }
  const engine::GenerateResult r = session.generate(prompt, g, stream);
  const auto& t = r.timings;
  auto per_token = [](double ms, std::int64_t n) {
    return n > 0 ? ms / static_cast<double>(n) : 0.0;
  };
  auto per_second = [](double ms, std::int64_t n) {
    return ms > 0 ? static_cast<double>(n) * 1e3 / ms : 0.0;
  };
  if (o.json) {
    const nlohmann::json doc = {
        {"text", r.text},
        {"tokens", r.tokens},
        {"token_count", r.tokens.size()},
        {"finish_reason", engine::finish_reason_name(r.finish)},
        {"seed", sampling.seed},
        {"timings",
         {{"load_ms", load_ms},
          {"prompt_tokens", t.prompt_tokens},
          {"prompt_ms", t.prompt_ms},
          {"prompt_tokens_per_second", per_second(t.prompt_ms, t.prompt_tokens)},
          {"eval_tokens", t.generated_tokens},
          {"eval_ms", t.eval_ms},
          {"eval_ms_per_token", per_token(t.eval_ms, t.generated_tokens)},
          {"eval_tokens_per_second", per_second(t.eval_ms, t.generated_tokens)}}}};
    std::puts(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::fputs("\n", stdout);
  fmt::print(stderr, "\nload:        {:.1f} ms\n", load_ms);
  fmt::print(stderr, "prompt eval: {} tokens in {:.1f} ms ({:.2f} ms/token, {:.1f} tokens/s)\n",
             t.prompt_tokens, t.prompt_ms, per_token(t.prompt_ms, t.prompt_tokens),
             per_second(t.prompt_ms, t.prompt_tokens));
  fmt::print(stderr, "eval:        {} tokens in {:.1f} ms ({:.2f} ms/token, {:.1f} tokens/s)\n",
             t.generated_tokens, t.eval_ms, per_token(t.eval_ms, t.generated_tokens),
             per_second(t.eval_ms, t.generated_tokens));
  fmt::print(stderr, "finish:      {} (seed {})\n", engine::finish_reason_name(r.finish),
             sampling.seed);
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
  opts->kernel.add_to(*sub, false);
  sub->callback([opts, prompt] { run(*opts, prompt->count() > 0); });
}

}  // namespace nanochat::cli
