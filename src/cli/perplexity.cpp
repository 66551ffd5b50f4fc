// nanochat perplexity: perplexity and bits per byte of a text, chunked as llama.cpp's
// llama-perplexity does — the text is cut into chunks of -c tokens, each chunk starts with BOS
// (when the model adds one), and only the second half of each chunk is scored, so every scored
// token has at least half a context before it.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/engine/scoring.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  std::string file;
  std::int64_t context = 0;
  std::int64_t max_chunks = 0;
  bool json = false;
  KernelFlags kernel;
};

void run(const Options& o) {
  const std::string text = read_file(o.file);
  engine::validate_context(o.context);
  const auto model = load_model(o.model, o.kernel);
  const std::int64_t n_ctx =
      o.context > 0 ? o.context : std::min<std::int64_t>(model->config().context_length, 512);
  if (n_ctx > model->config().context_length) {
    fail_argument("context", n_ctx, "exceeds the model's context of {} tokens",
                  model->config().context_length);
  }
  const std::vector<model::TokenId> tokens = model->tokenizer().encode(text, true);
  const std::int64_t chunks_total = static_cast<std::int64_t>(tokens.size()) / n_ctx;
  if (chunks_total == 0) {
    fail<UsageError>(
        "{}: {} tokens are fewer than one chunk of -c {}; use a longer text or a "
        "smaller -c",
        o.file, tokens.size(), n_ctx);
  }
  const std::int64_t chunks =
      o.max_chunks > 0 ? std::min(o.max_chunks, chunks_total) : chunks_total;
  const double start = now_seconds();
  const engine::Score score =
      engine::score_chunks(*model, tokens, n_ctx, chunks, [&](const engine::Score& s) {
        if (o.json) return;
        fmt::print(stderr, "[{}]{:.4f}{}", s.chunks, s.perplexity(),
                   s.chunks == chunks ? "\n" : ",");
        std::fflush(stderr);
      });
  const double ppl = score.perplexity(), ppl_err = score.perplexity_error();
  const double bpb = score.bits_per_byte();
  const std::int64_t scored = score.tokens, bytes = score.bytes;
  const double seconds = now_seconds() - start;
  if (o.json) {
    const nlohmann::json doc = {{"perplexity", ppl},     {"perplexity_error", ppl_err},
                                {"bits_per_byte", bpb},  {"scored_tokens", scored},
                                {"scored_bytes", bytes}, {"chunks", chunks},
                                {"context", n_ctx},      {"seconds", seconds}};
    std::puts(doc.dump().c_str());
    return;
  }
  fmt::print("perplexity: {:.4f} +/- {:.4f}\nbits per byte: {:.4f}\n", ppl, ppl_err, bpb);
  fmt::print(stderr, "{} chunks of {} tokens, {} tokens scored ({} bytes) in {:.1f} s\n", chunks,
             n_ctx, scored, bytes, seconds);
}

}  // namespace

void add_perplexity(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("perplexity", "Perplexity and bits per byte of a text file");
  sub->add_option("-m,--model", o->model,
                  "GGUF model file (default: the shipped nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  sub->add_option("-f,--file", o->file, "Text file to score")->required();
  sub->add_option("-c,--ctx-size", o->context, "Tokens per chunk (0: min(model context, 512))")
      ->capture_default_str();
  sub->add_option("--chunks", o->max_chunks, "Score at most this many chunks (0: all)")
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object");
  o->kernel.add_to(*sub, false);
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
