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
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/membw.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/random.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/version.hpp"

namespace nanochat::cli {
namespace {

using kernels::Isa;

// BitNet b1.58 2B projections plus one matrix far past any last-level cache: 256 MiB of codes.
// It must be many times the L3 size: modern L3 replacement keeps part of a cyclically streamed
// buffer resident, and at 4x L3 that inflated the measured GEMV rate by a quarter.
const std::vector<std::string> kDefaultShapes = {"2560x2560", "640x2560", "6912x2560", "2560x6912",
                                                 "65536x16384"};
// A case whose single call would take longer than this (judged from the kernel's speed on
// earlier cases) is skipped, so the default run stays within minutes even for the scalar path.
constexpr double kMaxSecondsPerCall = 2.0;
constexpr double kMinSampleSeconds = 1e-3;

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

struct Result {
  std::string kernel;
  Isa isa;
  cli::Shape shape;
  int batch = 1;
  int threads = 1;
  kernels::Plan plan;
  Summary seconds;
  std::size_t weight_bytes = 0;
  double gops = 0;
  double weight_gbps = 0;
  double bw_fraction = 0;  // of the read bandwidth at this thread count; 0 when not measured
  double vs_scalar = 0;    // scalar time / this time, same case; 0 when scalar was not run
  double token_cost = 0;   // time per token / time of the b=1 case, same kernel; 0 for b=1
};

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

kernels::PackedMatrix random_matrix(const cli::Shape& shape, Isa isa, int tile_rows) {
  return kernels::pack_matrix(
      shape.rows, shape.cols,
      [](std::int64_t row, std::span<std::int8_t> trits) {
        XorShift64 rng{0x51ed270b27f1a5c3ull ^
                       static_cast<std::uint64_t>(row + 1) * 0x9e3779b97f4a7c15ull};
        std::uint64_t bits = 0;
        int left = 0;
        for (auto& t : trits) {
          if (left == 0) {
            bits = rng.next();
            left = 16;
          }
          // 4 bits -> trit with p(-1) = p(+1) = 5/16, p(0) = 6/16: near BitNet's weight mix.
          const unsigned v = bits & 15u;
          bits >>= 4;
          --left;
          t = static_cast<std::int8_t>(v < 5 ? -1 : (v < 10 ? 1 : 0));
        }
      },
      isa, tile_rows);
}

struct Timing {
  Summary seconds;
  // Median of (weight bytes / call time) / (probe bandwidth) over samples taken in pairs; 0 when
  // no probe was given.
  double bw_fraction = 0;
};

// Times calls of one case. With a probe, every timed sample is paired with one bandwidth sample
// taken right before it, and the fraction of read bandwidth is the median of the paired ratios:
// on a shared machine the available bandwidth drifts, and a reference measured minutes earlier
// would make the ratio meaningless.
Timing time_calls(const kernels::PackedMatrix& w, const kernels::PackedActivations& x,
                  int token_block, kernels::ThreadPool& pool, std::vector<std::int32_t>& y,
                  int reps, kernels::BandwidthProbe* probe, Isa probe_isa) {
  const double start = now_seconds();
  kernels::run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));
  const double first = now_seconds() - start;
  int calls = std::max(1, static_cast<int>(kMinSampleSeconds / std::max(first, 1e-9)));
  if (first > 0.25) reps = std::min(reps, 3);  // slow cases: fewer, still a median
  std::vector<double> samples, ratios;
  for (int r = 0; r < reps; ++r) {
    const double reference = probe ? probe->sample_gbps(pool, probe_isa) : 0;
    const double t0 = now_seconds();
    for (int i = 0; i < calls; ++i) {
      kernels::run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));
    }
    const double per_call = (now_seconds() - t0) / calls;
    samples.push_back(per_call);
    if (probe) ratios.push_back(static_cast<double>(w.weight_bytes()) / per_call / 1e9 / reference);
  }
  return Timing{summarize(samples), probe ? summarize(ratios).median : 0};
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
        r.kernel, r.shape.rows, r.shape.cols, r.batch, r.threads, r.plan.tile_rows,
        r.plan.token_block, variant_suffix(r.plan), human_time(r.seconds.median),
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
  return {{"kernel", r.kernel},
          {"isa", kernels::isa_name(r.isa)},
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

void run(const Options& o) {
  if (o.output != "md" && o.output != "json" && o.output != "csv") {
    fail<UsageError>("-o {}: unknown output format; use md, json or csv", o.output);
  }
  if (o.reps < 1 || o.reps > 1000) fail<UsageError>("--reps {}: use 1 to 1000", o.reps);
  std::vector<cli::Shape> shapes;
  for (const auto& s : (o.shapes.empty() ? kDefaultShapes : o.shapes)) {
    shapes.push_back(parse_shape(s, "--shape"));
  }
  std::vector<int> thread_counts = o.threads.empty()
                                       ? std::vector<int>{1, kernels::default_thread_count()}
                                       : parse_int_list(o.threads, "-t");
  std::sort(thread_counts.begin(), thread_counts.end());
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  const std::vector<int> batches = parse_int_list(o.batches, "-b");
  const std::vector<Isa> isas = parse_isa_list(o.isas);
  kernels::Autotuner tuner(kernels::parse_tune_mode(o.autotune),
                           kernels::Autotuner::default_cache_file());

  std::map<int, std::unique_ptr<kernels::ThreadPool>> pools;
  for (int t : thread_counts) pools[t] = std::make_unique<kernels::ThreadPool>(t);

  const Isa probe_isa = kernels::available_isas().front();
  std::unique_ptr<kernels::BandwidthProbe> probe;
  std::map<int, kernels::Bandwidth> bandwidth;
  if (!o.no_bandwidth) {
    probe = std::make_unique<kernels::BandwidthProbe>();
    for (int t : thread_counts) {
      fmt::print(stderr, "benchmark: measuring memory read bandwidth with {} thread{}...\n", t,
                 t == 1 ? "" : "s");
      bandwidth[t] = kernels::measure_read_bandwidth(*pools[t], probe_isa, *probe);
    }
  }
  // Matrices at least this large stream from memory, so their bandwidth fraction is measured
  // against paired probe samples; smaller ones are compared with the figure above.
  const std::size_t out_of_cache_bytes = std::max<std::size_t>(2 * cpu_info().l3_bytes, 1);

  std::vector<Result> results;
  std::vector<std::string> notes;
  std::map<Isa, double> macs_per_second;  // per thread, from the latest case: to skip hopeless ones
  const std::size_t total = shapes.size() * batches.size() * thread_counts.size() * isas.size();
  std::size_t done = 0;
  for (const cli::Shape& shape : shapes) {
    for (Isa isa : isas) {
      std::map<int, kernels::PackedMatrix> packed;  // by tile_rows, for this shape and ISA
      for (int batch : batches) {
        kernels::PackedActivations x;
        {
          std::vector<std::int8_t> act(static_cast<std::size_t>(batch * shape.cols));
          XorShift64 rng{0x1234567ull + static_cast<std::uint64_t>(batch)};
          for (auto& v : act)
            v = static_cast<std::int8_t>(static_cast<int>(rng.next() % 255) - 127);
          kernels::pack_activations_i8(act.data(), batch, shape.cols, x);
        }
        std::vector<std::int32_t> y(static_cast<std::size_t>(batch * shape.rows));
        for (int t : thread_counts) {
          ++done;
          const double macs =
              static_cast<double>(shape.rows) * static_cast<double>(shape.cols) * batch;
          if (auto it = macs_per_second.find(isa); it != macs_per_second.end()) {
            const double estimate = macs / (it->second * t);
            if (estimate > kMaxSecondsPerCall) {
              notes.push_back(fmt::format(
                  "skipped {} {}x{} b{} t{}: about {:.0f} s per call at the speed seen so far; "
                  "run it alone with --isa {} --shape {}x{} -b {} -t {} to measure it",
                  kernels::kernel_info(isa).name, shape.rows, shape.cols, batch, t, estimate,
                  kernels::isa_name(isa), shape.rows, shape.cols, batch, t));
              fmt::print(stderr, "benchmark: [{}/{}] skipped {} {}x{} b{} t{} (~{:.0f} s/call)\n",
                         done, total, kernels::kernel_info(isa).name, shape.rows, shape.cols, batch,
                         t, estimate);
              continue;
            }
          }
          fmt::print(stderr, "benchmark: [{}/{}] {} {}x{} b{} t{}: tuning", done, total,
                     kernels::kernel_info(isa).name, shape.rows, shape.cols, batch, t);
          std::fflush(stderr);
          const kernels::Plan plan =
              tuner.plan(kernels::PlanRequest{shape.rows, shape.cols, batch, isa, 0}, *pools[t]);
          auto it = packed.find(plan.tile_rows);
          if (it == packed.end()) {
            fmt::print(stderr, ", packing");
            std::fflush(stderr);
            it = packed.emplace(plan.tile_rows, random_matrix(shape, isa, plan.tile_rows)).first;
          }
          it->second.variant = plan.variant;
          fmt::print(stderr, ", timing");
          std::fflush(stderr);
          Result r;
          r.kernel = kernels::kernel_info(isa).name;
          r.isa = isa;
          r.shape = shape;
          r.batch = batch;
          r.threads = t;
          r.plan = plan;
          r.weight_bytes = it->second.weight_bytes();
          const bool paired = probe && r.weight_bytes >= out_of_cache_bytes;
          const Timing timing = time_calls(it->second, x, plan.token_block, *pools[t], y, o.reps,
                                           paired ? probe.get() : nullptr, probe_isa);
          r.seconds = timing.seconds;
          r.gops = 2 * macs / r.seconds.median / 1e9;
          r.weight_gbps = static_cast<double>(r.weight_bytes) / r.seconds.median / 1e9;
          if (paired) {
            r.bw_fraction = timing.bw_fraction;
          } else if (auto b = bandwidth.find(t); b != bandwidth.end()) {
            r.bw_fraction = r.weight_gbps / b->second.median_gbps;
          }
          macs_per_second[isa] = macs / r.seconds.median / t;
          fmt::print(stderr, ": {} per call\n", human_time(r.seconds.median));
          results.push_back(r);
        }
      }
    }
  }

  for (Result& r : results) {
    for (const Result& other : results) {
      const bool same_case = other.shape.rows == r.shape.rows && other.shape.cols == r.shape.cols &&
                             other.threads == r.threads;
      if (same_case && other.batch == r.batch && other.isa == Isa::kScalar) {
        r.vs_scalar = other.seconds.median / r.seconds.median;
      }
      if (same_case && other.isa == r.isa && other.batch == 1 && r.batch > 1) {
        r.token_cost = r.seconds.median / r.batch / other.seconds.median;
      }
    }
  }

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
        "weight_gbps,read_bw_fraction,speedup_vs_scalar,token_cost_vs_b1\n");
    for (const Result& r : results) {
      fmt::print("{},{},{},{},{},{},{},{},{},{:.3f},{:.4f},{:.3f},{:.3f},{:.4f},{:.3f},{:.4f}\n",
                 r.kernel, kernels::isa_name(r.isa), r.shape.rows, r.shape.cols, r.batch, r.threads,
                 r.plan.tile_rows, r.plan.token_block,
                 kernels::kernel_info(r.isa).variant_name(r.plan.variant), r.seconds.median * 1e6,
                 r.seconds.spread, r.gops, r.weight_gbps, r.bw_fraction, r.vs_scalar, r.token_cost);
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
      ->check(int_list_check("-t"));
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
