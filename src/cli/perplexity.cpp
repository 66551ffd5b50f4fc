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
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/stats.hpp"

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
  if (o.context < 0) fail<UsageError>("-c {}: must be 0 (the model's) or positive", o.context);
  int threads = 0;
  if (!o.kernel.threads.empty()) threads = parse_int_list(o.kernel.threads, "-t")[0];
  const auto file = gguf::GgufFile::open(o.model);
  kernels::KernelContext ctx(o.kernel.options(threads));
  auto model = model::Model::load(file, ctx);
  const model::Tokenizer tok = model::Tokenizer::from_gguf(file);
  const std::int64_t n_ctx =
      o.context > 0 ? o.context : std::min<std::int64_t>(model->config().context_length, 512);
  if (n_ctx < 4) fail<UsageError>("-c {}: use at least 4 tokens per chunk", n_ctx);
  std::vector<model::TokenId> tokens = tok.encode(text, true);
  const std::int64_t chunks_total = static_cast<std::int64_t>(tokens.size()) / n_ctx;
  if (chunks_total == 0) {
    fail<UsageError>(
        "{}: {} tokens are fewer than one chunk of -c {}; use a longer text or a "
        "smaller -c",
        o.file, tokens.size(), n_ctx);
  }
  const std::int64_t chunks =
      o.max_chunks > 0 ? std::min(o.max_chunks, chunks_total) : chunks_total;
  const std::int64_t first = n_ctx / 2;
  const auto vocab = static_cast<std::size_t>(model->config().vocab_size);
  model::KvCache cache(model->config(), n_ctx);
  std::vector<float> logits;
  double nll = 0, nll2 = 0;  // nats
  std::int64_t scored = 0, bytes = 0;
  const double start = now_seconds();
  for (std::int64_t c = 0; c < chunks; ++c) {
    std::vector<model::TokenId> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (tok.add_bos() && tok.bos()) chunk[0] = *tok.bos();
    cache.clear();
    model->forward(chunk, cache, logits, true);
    for (std::int64_t i = first; i < n_ctx - 1; ++i) {
      const float* row = logits.data() + static_cast<std::size_t>(i) * vocab;
      const float top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - top));
      const model::TokenId target = chunk[static_cast<std::size_t>(i + 1)];
      const double lp = static_cast<double>(row[target] - top) - std::log(sum);
      nll -= lp;
      nll2 += lp * lp;
      ++scored;
      bytes += static_cast<std::int64_t>(tok.piece(target).size());
    }
    if (!o.json) {
      fmt::print(stderr, "[{}]{:.4f}{}", c + 1, std::exp(nll / static_cast<double>(scored)),
                 c + 1 == chunks ? "\n" : ",");
      std::fflush(stderr);
    }
  }
  const double mean = nll / static_cast<double>(scored);
  const double var = nll2 / static_cast<double>(scored) - mean * mean;
  const double ppl = std::exp(mean);
  const double ppl_err = ppl * std::sqrt(std::max(var, 0.0) / static_cast<double>(scored));
  const double bpb = nll / std::log(2.0) / static_cast<double>(std::max<std::int64_t>(bytes, 1));
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
  sub->add_option("-m,--model", o->model, "GGUF model file")
      ->required()
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
