// nanochat benchmark train: training tokens/s of a config's model (forward, backward, clipping
// and the optimizer step — what a training step costs, without data preparation, evaluation or
// checkpoints), on random tokens, at each thread count. bench/compare_training.sh runs it beside
// the PyTorch reference (bench/train_reference.py) and prints the ratio.
#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/optim.hpp"
#include "nanochat/train/train_model.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string config;
  std::vector<std::string> set;
  std::string threads;
  std::int64_t steps = 10;
  std::int64_t warmup = 2;
  std::string output = "md";
  std::string isa, autotune = "on";
};

void run(const Options& o) {
  if (o.output != "md" && o.output != "json") fail<UsageError>("-o {}: use md or json", o.output);
  if (o.steps < 1 || o.warmup < 0)
    fail<UsageError>("--steps must be 1 or more, --warmup 0 or more");
  train::TrainConfig cfg = train::load_train_config(o.config, o.set);
  if (cfg.model.vocab_size == 0) {
    cfg.model.vocab_size = cfg.data.tokenizer_vocab_size > 0 ? cfg.data.tokenizer_vocab_size : 4096;
  }
  const auto& t = cfg.training;
  const std::vector<int> thread_counts = o.threads.empty()
                                             ? std::vector<int>{kernels::default_thread_count()}
                                             : parse_thread_list(o.threads);
  struct Row {
    int threads;
    Summary tps;
  };
  std::vector<Row> rows;
  const std::int64_t tokens = t.batch_size * t.seq_len * t.grad_accum;
  for (int threads : thread_counts) {
    KernelFlags flags;
    flags.isa = o.isa;
    flags.autotune = o.autotune;
    kernels::KernelContext ctx(flags.options(threads));
    train::TrainModel model(cfg.model, ctx);
    model.set_gemm_precision(train::parse_gemm_precision(t.matmul_precision));
    model.init(t.seed);
    train::Optimizer optim(t, model.params());
    std::mt19937_64 rng(t.seed);
    std::uniform_int_distribution<std::int32_t> token(
        0, static_cast<std::int32_t>(cfg.model.vocab_size - 1));
    std::vector<std::int32_t> in(static_cast<std::size_t>(t.batch_size * t.seq_len)), tg(in.size());
    std::vector<double> rates;
    for (std::int64_t step = 0; step < o.warmup + o.steps; ++step) {
      const auto start = std::chrono::steady_clock::now();
      model.zero_grad();
      for (std::int64_t micro = 0; micro < t.grad_accum; ++micro) {
        for (std::size_t i = 0; i < in.size(); ++i) {
          in[i] = token(rng);
          tg[i] = token(rng);
        }
        model.train_step(in, tg, t.batch_size, t.seq_len, t.entropy_weight,
                         1.0f / static_cast<float>(t.grad_accum));
      }
      train::clip_gradients(model.params(), t.grad_clip);
      optim.step(ctx.pool(), model.params(), train::lr_multiplier(t, step));
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (step >= o.warmup) rates.push_back(static_cast<double>(tokens) / s);
      fmt::print(stderr, "benchmark train: t{} step {}/{}: {:.0f} tokens/s\n", threads, step + 1,
                 o.warmup + o.steps, static_cast<double>(tokens) / s);
    }
    rows.push_back({threads, summarize(rates)});
  }
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const double peak_mib = static_cast<double>(u.ru_maxrss) / 1024.0;
  const auto& m = cfg.model;
  const std::string shape = fmt::format(
      "dim {}, {} layers, {} heads ({} kv), ffn {}, vocab {}, {} stream{}, seq {}, "
      "batch {}",
      m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim, m.vocab_size, m.mhc_streams,
      m.mhc_streams > 1 ? "s" : "", t.seq_len, t.batch_size);
  if (o.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows) {
      out.push_back({{"threads", r.threads},
                     {"tokens_per_second", r.tps.median},
                     {"mean", r.tps.mean},
                     {"stddev", r.tps.stddev}});
    }
    std::puts(nlohmann::json({{"config", o.config},
                              {"shape", shape},
                              {"peak_memory_mib", peak_mib},
                              {"results", out}})
                  .dump(2)
                  .c_str());
    return;
  }
  fmt::print(
      "config: {} ({})\n\n| threads | tokens/s (median) | mean ± sd |\n| ---: | ---: | ---: |\n",
      o.config, shape);
  for (const Row& r : rows) {
    fmt::print("| {} | {:.0f} | {:.0f} ± {:.0f} |\n", r.threads, r.tps.median, r.tps.mean,
               r.tps.stddev);
  }
  fmt::print("\npeak memory: {:.0f} MiB\n", peak_mib);
}

}  // namespace

void add_benchmark_train(CLI::App& bench) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = bench.add_subcommand(
      "train", "Training tokens/s of a config's model (random tokens; no data, no checkpoints)");
  sub->add_option("-c,--config", o->config, "Training config (TOML)")->required();
  sub->add_option("--set", o->set, "Override a config value: section.key=value (repeatable)");
  sub->add_option("-t,--threads", o->threads,
                  "Thread counts, comma separated (default: physical cores)");
  sub->add_option("--steps", o->steps, "Timed steps per thread count")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str();
  sub->add_option("-o,--output", o->output, "md or json")->capture_default_str();
  sub->add_option("--isa", o->isa, "Force a kernel path: scalar, avx2 or avx512");
  sub->add_option("--autotune", o->autotune, "on, off or force")->capture_default_str();
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
