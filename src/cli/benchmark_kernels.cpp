// nanochat benchmark kernels: times every kernel path on GEMV (1 token) and GEMM (a batch) for
// each shape and thread count, with the tiling the autotuner picks, and relates the weight
// stream to this machine's read bandwidth measured in the same run. Tables in the style of
// llama-bench; `-o json` prints clean JSON on stdout; progress goes to stderr.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/kernels/benchmark.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/membw.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/version.hpp"

namespace nanochat::cli {
namespace {

using kernels::Isa;

// BitNet b1.58 2B projections plus one matrix far past any last-level cache: 256 MiB of codes.
// It must be many times the L3 size: modern L3 replacement keeps part of a cyclically streamed
// buffer resident, and at 4x L3 that inflated the measured GEMV rate by a quarter.
const std::vector<std::string> kDefaultShapes = {"2560x2560", "640x2560", "6912x2560", "2560x6912",
                                                 "65536x16384"};

struct Options {
  std::vector<std::string> shapes;
  std::string threads;
  std::string batches = "1,64";
  std::string isas;
  std::string output = "md";
  std::string autotune = "on";
  int reps = 7;
  bool no_bandwidth = false;
};

using Result = kernels::KernelBenchResult;

std::vector<Isa> parse_isa_list(const std::string& text) {
  if (text.empty()) {
    if (auto forced = kernels::isa_override()) return {*forced};
    auto all = kernels::available_isas();
    std::reverse(all.begin(), all.end());  // scalar first: the reference for the ratios
    return all;
  }
  std::vector<Isa> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? comma : comma - start);
    out.push_back(*kernels::isa_override(item));  // throws on unknown or unavailable
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// The kernel's name, and its layout where it is not the kernel's default ("avx512-vnni base3").
std::string kernel_label(Isa isa, kernels::Layout layout) {
  const kernels::KernelInfo& k = kernels::kernel_info(isa);
  if (layout == k.layout) return k.name;
  return fmt::format("{} {}", k.name, kernels::layout_name(layout));
}

// " gfni" where the plan uses a kernel's non-default unpacking.
std::string variant_suffix(const kernels::Plan& plan) {
  if (plan.variant == 0) return "";
  return std::string(" ") + kernels::kernel_info(plan.isa).variant_name(plan.variant);
}

std::string human_time(double seconds) {
  if (seconds < 1e-3) return fmt::format("{:.1f} us", seconds * 1e6);
  if (seconds < 1) return fmt::format("{:.2f} ms", seconds * 1e3);
  return fmt::format("{:.2f} s", seconds);
}

void print_markdown(const std::vector<Result>& results, const std::map<int, kernels::Bandwidth>& bw,
                    const std::vector<std::string>& notes) {
  const CpuInfo& cpu = cpu_info();
  fmt::print("nanochat {} ({}) on {} ({} cores, {})\n", build::kVersion, build::kGitCommit,
             cpu.brand, cpu.physical_cores, cpu.feature_list());
  for (const auto& [t, b] : bw) {
    fmt::print("memory read bandwidth, {} thread{}: {:.1f} GB/s (±{:.1f}%, {} MiB buffer)\n", t,
               t == 1 ? "" : "s", b.median_gbps, b.spread * 100, b.bytes >> 20);
  }
  fmt::print(
      "\n| kernel | shape | b | t | tile | time/call | ± | GOPS | weights GB/s | % read BW "
      "| vs scalar | token cost vs b=1 |\n");
  fmt::print(
      "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const Result& r : results) {
    fmt::print(
        "| {} | {}x{} | {} | {} | {}x{}{} | {} | {:.1f}% | {:.1f} | {:.2f} | {} | {} | {} |\n",
        kernel_label(r.isa, r.plan.layout), r.shape.rows, r.shape.cols, r.batch, r.threads,
        r.plan.tile_rows, r.plan.token_block, variant_suffix(r.plan), human_time(r.seconds.median),
        r.seconds.spread * 100, r.gops, r.weight_gbps,
        r.bw_fraction > 0 ? fmt::format("{:.0f}%", r.bw_fraction * 100) : "-",
        r.vs_scalar > 0 ? fmt::format("{:.1f}x", r.vs_scalar) : "-",
        r.token_cost > 0 ? fmt::format("{:.3f}", r.token_cost) : "-");
  }
  for (const auto& n : notes) fmt::print("\nnote: {}", n);
  if (!notes.empty()) fmt::print("\n");
  fmt::print(
      "\ntime/call: median over repeated runs; ±: half the interquartile range; tile: rows "
      "per tile x tokens per pass (autotuned), and how one token's weights are unpacked where the "
      "kernel has a choice (gfni: one GFNI instruction for two of the four fields); % read BW: "
      "weight bytes per second over the "
      "read bandwidth at the same thread count; for matrices over 2x L3, the median of ratios to "
      "bandwidth samples taken alternately with the timed calls (shared machines drift), "
      "otherwise against the figure above (over 100%: the weights came from cache).\n");
}

nlohmann::json result_json(const Result& r) {
  return {{"kernel", kernels::kernel_info(r.isa).name},
          {"isa", kernels::isa_name(r.isa)},
          {"layout", kernels::layout_name(r.plan.layout)},
          {"rows", r.shape.rows},
          {"cols", r.shape.cols},
          {"batch", r.batch},
          {"threads", r.threads},
          {"tile_rows", r.plan.tile_rows},
          {"token_block", r.plan.token_block},
          {"variant", kernels::kernel_info(r.isa).variant_name(r.plan.variant)},
          {"plan_source", r.plan.source},
          {"median_us", r.seconds.median * 1e6},
          {"min_us", r.seconds.min * 1e6},
          {"max_us", r.seconds.max * 1e6},
          {"spread", r.seconds.spread},
          {"samples", r.seconds.n},
          {"gops", r.gops},
          {"weight_bytes", r.weight_bytes},
          {"weight_gbps", r.weight_gbps},
          {"read_bw_fraction", r.bw_fraction},
          {"speedup_vs_scalar", r.vs_scalar},
          {"token_cost_vs_b1", r.token_cost}};
}

// One whole line per event on stderr, so log lines (the autotuner's) never land mid-line.
void print_progress(const kernels::KernelBenchEvent& e) {
  using Kind = kernels::KernelBenchEvent::Kind;
  const std::string what = fmt::format("{} {}x{} b{} t{}", kernel_label(e.isa, e.layout),
                                       e.shape.rows, e.shape.cols, e.batch, e.threads);
  switch (e.kind) {
    case Kind::kBandwidth:
      fmt::print(stderr, "benchmark: measuring memory read bandwidth with {} thread{}...\n",
                 e.threads, e.threads == 1 ? "" : "s");
      break;
    case Kind::kPacking:
      fmt::print(stderr, "benchmark: [{}/{}] {}: packing the weights...\n", e.index, e.total, what);
      break;
    case Kind::kSkipped:
      fmt::print(stderr, "benchmark: [{}/{}] skipped {} (~{:.0f} s/call)\n", e.index, e.total, what,
                 e.estimate_seconds);
      break;
    case Kind::kDone:
      fmt::print(stderr, "benchmark: [{}/{}] {}: {} per call (tile {}x{}{})\n", e.index, e.total,
                 what, human_time(e.result->seconds.median), e.result->plan.tile_rows,
                 e.result->plan.token_block, variant_suffix(e.result->plan));
      break;
  }
  std::fflush(stderr);
}

void run(const Options& o) {
  if (o.output != "md" && o.output != "json" && o.output != "csv") {
    fail<UsageError>("-o {}: unknown output format; use md, json or csv", o.output);
  }
  kernels::KernelBenchConfig config;
  for (const auto& s : (o.shapes.empty() ? kDefaultShapes : o.shapes)) {
    config.shapes.push_back(parse_shape(s, "--shape"));
  }
  config.threads = o.threads.empty() ? std::vector<int>{1, kernels::default_thread_count()}
                                     : parse_thread_list(o.threads);
  config.batches = parse_int_list(o.batches, "-b");
  config.isas = parse_isa_list(o.isas);
  config.layout = kernels::layout_override(
      config.isas.size() == 1 ? std::optional<Isa>(config.isas.front()) : std::nullopt);
  if (config.layout) {
    // A forced layout runs on the paths that have it: the default list keeps those, an explicit
    // --isa naming one without it is an error (its cases would silently vanish).
    const auto has_layout = [&](Isa isa) {
      return kernels::kernel_has_layout(isa, *config.layout);
    };
    if (o.isas.empty()) {
      std::erase_if(config.isas, [&](Isa isa) { return !has_layout(isa); });
    } else {
      for (Isa isa : config.isas) {
        if (!has_layout(isa)) {
          fail<UsageError>(
              "--isa {}: that path has no {} layout (NANOCHAT_LAYOUT); drop it from --isa",
              kernels::isa_name(isa), kernels::layout_name(*config.layout));
        }
      }
    }
  }
  config.reps = o.reps;
  config.bandwidth = !o.no_bandwidth;
  config.autotune = kernels::parse_tune_mode(o.autotune);
  const kernels::KernelBenchReport report = kernels::run_kernel_benchmark(config, print_progress);
  const auto& results = report.results;
  const auto& bandwidth = report.bandwidth;
  const auto& notes = report.notes;

  if (o.output == "json") {
    nlohmann::json bw = nlohmann::json::array();
    for (const auto& [t, b] : bandwidth) {
      bw.push_back(
          {{"threads", t}, {"gbps", b.median_gbps}, {"spread", b.spread}, {"bytes", b.bytes}});
    }
    nlohmann::json rows = nlohmann::json::array();
    for (const Result& r : results) rows.push_back(result_json(r));
    const nlohmann::json doc = {{"version", build::kVersion},
                                {"commit", build::kGitCommit},
                                {"cpu", cpu_info().brand},
                                {"cpu_signature", cpu_info().signature()},
                                {"read_bandwidth", bw},
                                {"results", rows},
                                {"notes", notes}};
    std::puts(doc.dump(2).c_str());
  } else if (o.output == "csv") {
    fmt::print(
        "kernel,isa,rows,cols,batch,threads,tile_rows,token_block,variant,median_us,spread,gops,"
        "weight_gbps,read_bw_fraction,speedup_vs_scalar,token_cost_vs_b1,layout\n");
    for (const Result& r : results) {
      fmt::print("{},{},{},{},{},{},{},{},{},{:.3f},{:.4f},{:.3f},{:.3f},{:.4f},{:.3f},{:.4f},{}\n",
                 kernels::kernel_info(r.isa).name, kernels::isa_name(r.isa), r.shape.rows,
                 r.shape.cols, r.batch, r.threads, r.plan.tile_rows, r.plan.token_block,
                 kernels::kernel_info(r.isa).variant_name(r.plan.variant), r.seconds.median * 1e6,
                 r.seconds.spread, r.gops, r.weight_gbps, r.bw_fraction, r.vs_scalar, r.token_cost,
                 kernels::layout_name(r.plan.layout));
    }
  } else {
    print_markdown(results, bandwidth, notes);
  }
}

}  // namespace

void add_benchmark(CLI::App& app) {
  CLI::App* bench = app.add_subcommand(
      "benchmark", "Measure speed: kernels, a model (prefill and decode), training");
  bench->require_subcommand(1);
  auto opts = std::make_shared<Options>();
  CLI::App* sub = bench->add_subcommand(
      "kernels",
      "Time ternary GEMV/GEMM for every kernel path against this machine's read bandwidth");
  sub->add_option("--shape", opts->shapes,
                  "Matrix ROWSxCOLS, repeatable (default: 2560x2560 640x2560 6912x2560 "
                  "2560x6912 and 65536x16384, which is far larger than the L3 cache)");
  sub->add_option("-t,--threads", opts->threads,
                  "Thread counts, comma separated (default: 1 and the physical core count)")
      ->envname("NANOCHAT_ARG_THREADS")
      ->check(thread_list_check());
  sub->add_option("-b,--batch", opts->batches, "Tokens per call, comma separated")
      ->capture_default_str();
  sub->add_option("--isa", opts->isas,
                  "Kernel paths, comma separated: scalar, avx2, avx512 (default: all this CPU "
                  "has, or NANOCHAT_ISA)");
  sub->add_option("-o,--output", opts->output, "Output format: md, json or csv")
      ->capture_default_str();
  sub->add_option("-r,--reps", opts->reps, "Timed repetitions per case (the median is reported)")
      ->capture_default_str();
  sub->add_option("--autotune", opts->autotune,
                  "on: cached tilings, measure missing ones; off: defaults; force: re-measure")
      ->capture_default_str();
  sub->add_flag("--no-bandwidth", opts->no_bandwidth, "Skip the memory bandwidth measurement");
  sub->callback([opts] { run(*opts); });
  add_benchmark_model(*bench);
  add_benchmark_train(*bench);
}

}  // namespace nanochat::cli
