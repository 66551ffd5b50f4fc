// nanochat benchmark model: prompt processing (ppN) and text generation (tgN) speed as
// llama-bench reports them — mean ± standard deviation of tokens/s over repetitions — plus the
// bytes one decoded token reads as a fraction of the read bandwidth measured in the same run.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/kernels/membw.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string model;
  int prompt = 64;
  int generate = 32;
  std::string threads;
  int reps = 5;
  std::string output = "md";
  std::string isa;
  std::string autotune = "on";
};

struct Row {
  std::string test;
  int threads;
  Summary tps;
  double bw_fraction = 0;
};

void run(const Options& o) {
  if (o.output != "md" && o.output != "json" && o.output != "csv") {
    fail<UsageError>("-o {}: use md, json or csv", o.output);
  }
  if (o.prompt < 0 || o.generate < 0 || o.prompt + o.generate == 0) {
    fail<UsageError>(
        "-p {} -n {}: 0 or more each (0 skips that test, as in llama-bench), not both 0", o.prompt,
        o.generate);
  }
  if (o.reps < 1) fail<UsageError>("-r {}: at least 1", o.reps);
  std::vector<int> thread_counts = o.threads.empty()
                                       ? std::vector<int>{kernels::default_thread_count()}
                                       : parse_thread_list(o.threads);
  const std::string model_path = cli::model_path(o.model);
  const auto file = gguf::GgufFile::open(model_path);
  std::vector<Row> rows;
  std::size_t bytes_per_token = 0;
  kernels::BandwidthProbe probe;
  for (int t : thread_counts) {
    KernelFlags flags;
    flags.isa = o.isa;
    flags.autotune = o.autotune;
    kernels::KernelContext ctx(flags.options(t));
    auto model = model::Model::load(file, ctx);
    bytes_per_token = model->bytes_per_token();
    const auto& c = model->config();
    if (o.prompt + o.generate > c.context_length) {
      fail<UsageError>("-p {} + -n {} exceed the model's context of {} tokens", o.prompt,
                       o.generate, c.context_length);
    }
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> token(0, static_cast<int>(c.vocab_size - 1));
    // The prompt test's tokens; generation starts from one random token.
    std::vector<model::TokenId> prompt(static_cast<std::size_t>(std::max(o.prompt, 1)));
    for (auto& p : prompt) p = token(rng);
    model::KvCache cache(c, std::max(o.prompt, 1) + o.generate);
    std::vector<float> logits;
    fmt::print(stderr, "benchmark: t{} warming up (and tuning kernels if needed)...\n", t);
    if (o.prompt > 0) model->forward(prompt, cache, logits);  // warm-up, tunes the prefill shapes
    cache.clear();
    model->forward(std::span<const model::TokenId>(prompt.data(), 1), cache, logits);
    std::vector<double> pp, tg, ratio;
    for (int r = 0; r < o.reps; ++r) {
      if (o.prompt > 0) {
        cache.clear();
        const double start = now_seconds();
        model->forward(prompt, cache, logits);
        pp.push_back(o.prompt / (now_seconds() - start));
      }
      if (o.generate > 0) {
        const double bw = probe.sample_gbps(ctx.pool(), kernels::available_isas().front());
        cache.clear();
        model::TokenId next = prompt[0];
        const double start = now_seconds();
        for (int i = 0; i < o.generate; ++i) {
          model->forward(std::span<const model::TokenId>(&next, 1), cache, logits);
          next = static_cast<model::TokenId>(std::max_element(logits.begin(), logits.end()) -
                                             logits.begin());
        }
        const double tps = o.generate / (now_seconds() - start);
        tg.push_back(tps);
        ratio.push_back(static_cast<double>(bytes_per_token) * tps / 1e9 / bw);
      }
      fmt::print(stderr, "benchmark: t{} rep {}/{}:{}{}\n", t, r + 1, o.reps,
                 pp.empty() ? "" : fmt::format(" pp {:.1f} tok/s", pp.back()),
                 tg.empty() ? "" : fmt::format(" tg {:.1f} tok/s", tg.back()));
    }
    if (!pp.empty()) rows.push_back({fmt::format("pp{}", o.prompt), t, summarize(pp), 0});
    if (!tg.empty()) {
      rows.push_back({fmt::format("tg{}", o.generate), t, summarize(tg), summarize(ratio).median});
    }
  }
  if (o.output == "csv") {  // llama-bench's -o csv: one header line, one line per test
    std::puts("model,test,threads,avg_ts,stddev_ts,median_ts,bytes_per_token,read_bw_fraction");
    for (const Row& r : rows) {
      fmt::print("\"{}\",{},{},{:.3f},{:.3f},{:.3f},{},{:.4f}\n", model_path, r.test, r.threads,
                 r.tps.mean, r.tps.stddev, r.tps.median, bytes_per_token, r.bw_fraction);
    }
    return;
  }
  if (o.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows) {
      out.push_back({{"test", r.test},
                     {"threads", r.threads},
                     {"tokens_per_second", r.tps.mean},
                     {"stddev", r.tps.stddev},
                     {"median", r.tps.median},
                     {"read_bw_fraction", r.bw_fraction}});
    }
    std::puts(nlohmann::json(
                  {{"model", model_path}, {"bytes_per_token", bytes_per_token}, {"results", out}})
                  .dump(2)
                  .c_str());
    return;
  }
  fmt::print("model: {} ({:.1f} MiB read per token)\n\n", model_path,
             static_cast<double>(bytes_per_token) / (1 << 20));
  fmt::print("| test | threads | t/s | bytes/token / read BW |\n| --- | ---: | ---: | ---: |\n");
  for (const Row& r : rows) {
    fmt::print("| {} | {} | {:.2f} ± {:.2f} | {} |\n", r.test, r.threads, r.tps.mean, r.tps.stddev,
               r.bw_fraction > 0 ? fmt::format("{:.0f}%", r.bw_fraction * 100) : "-");
  }
}

}  // namespace

void add_benchmark_model(CLI::App& bench) {
  auto o = std::make_shared<Options>();
  CLI::App* sub =
      bench.add_subcommand("model", "Prompt processing and generation speed of a model");
  sub->add_option("-m,--model", o->model,
                  "GGUF model file (default: the shipped nanochat-rust.gguf)")
      ->envname("NANOCHAT_ARG_MODEL");
  sub->add_option("-p,--n-prompt", o->prompt, "Prompt tokens (ppN; 0 skips the prompt test)")
      ->capture_default_str();
  sub->add_option("-n,--n-gen", o->generate, "Generated tokens (tgN; 0 skips generation)")
      ->capture_default_str();
  sub->add_option("-t,--threads", o->threads,
                  "Thread counts, comma separated (default: physical cores)");
  sub->add_option("-r,--reps", o->reps, "Repetitions")->capture_default_str();
  sub->add_option("-o,--output", o->output, "md, json or csv")->capture_default_str();
  sub->add_option("--isa", o->isa, "Force a kernel path: scalar, avx2 or avx512");
  sub->add_option("--autotune", o->autotune, "on, off or force")->capture_default_str();
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
