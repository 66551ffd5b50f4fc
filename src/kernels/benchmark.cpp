#include "nanochat/kernels/benchmark.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <span>
#include <utility>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/random.hpp"

namespace nanochat::kernels {
namespace {

constexpr double kMinSampleSeconds = 1e-3;  // calls per timed sample: at least this long

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
Timing time_calls(const PackedMatrix& w, const PackedActivations& x, int token_block,
                  ThreadPool& pool, std::vector<std::int32_t>& y, int reps, BandwidthProbe* probe,
                  Isa probe_isa) {
  const double start = now_seconds();
  run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));
  const double first = now_seconds() - start;
  const int calls = std::max(1, static_cast<int>(kMinSampleSeconds / std::max(first, 1e-9)));
  if (first > 0.25) reps = std::min(reps, 3);  // slow cases: fewer, still a median
  std::vector<double> samples, ratios;
  for (int r = 0; r < reps; ++r) {
    const double reference = probe ? probe->sample_gbps(pool, probe_isa) : 0;
    const double t0 = now_seconds();
    for (int i = 0; i < calls; ++i) {
      run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));
    }
    const double per_call = (now_seconds() - t0) / calls;
    samples.push_back(per_call);
    if (probe) ratios.push_back(static_cast<double>(w.weight_bytes()) / per_call / 1e9 / reference);
  }
  Timing timing{summarize(std::move(samples)), 0};
  if (!ratios.empty()) timing.bw_fraction = summarize(std::move(ratios)).median;
  return timing;
}

PackedActivations random_activations(int batch, std::int64_t cols) {
  std::vector<std::int8_t> act(static_cast<std::size_t>(batch * cols));
  XorShift64 rng{0x1234567ull + static_cast<std::uint64_t>(batch)};
  for (auto& v : act) v = static_cast<std::int8_t>(static_cast<int>(rng.next() % 255) - 127);
  PackedActivations x;
  pack_activations_i8(act.data(), batch, cols, x);
  return x;
}

void check_config(const KernelBenchConfig& c) {
  if (c.shapes.empty()) fail_argument("shapes", "", "no matrix shape given");
  for (const MatrixShape& s : c.shapes) {
    if (s.rows < 1 || s.cols < 1) {
      fail_argument("shape", fmt::format("{}x{}", s.rows, s.cols), "rows and columns must be > 0");
    }
  }
  if (c.threads.empty()) fail_argument("threads", "", "no thread count given");
  for (int t : c.threads) {
    if (t < 1) fail_argument("threads", t, "must be at least 1");
  }
  if (c.batches.empty()) fail_argument("batch", "", "no batch size given");
  for (int b : c.batches) {
    if (b < 1) fail_argument("batch", b, "must be at least 1");
  }
  if (c.isas.empty()) fail_argument("isa", "", "no kernel path given");
  if (c.reps < 1 || c.reps > 1000) fail_argument("reps", c.reps, "use 1 to 1000");
}

// Ratios between results of the same case: against scalar, and per token against one token.
void relate(std::vector<KernelBenchResult>& results) {
  for (KernelBenchResult& r : results) {
    for (const KernelBenchResult& other : results) {
      const bool same_case = other.shape.rows == r.shape.rows && other.shape.cols == r.shape.cols &&
                             other.threads == r.threads;
      if (same_case && other.batch == r.batch && other.isa == Isa::kScalar) {
        r.vs_scalar = other.seconds.median / r.seconds.median;
      }
      if (same_case && other.isa == r.isa && other.plan.layout == r.plan.layout &&
          other.batch == 1 && r.batch > 1) {
        r.token_cost = r.seconds.median / r.batch / other.seconds.median;
      }
    }
  }
}

// The pseudo-random ternary matrix the benchmark times, packed.
PackedMatrix benchmark_matrix(MatrixShape shape, Isa isa, Layout layout, int tile_rows) {
  return pack_matrix(
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
      isa, tile_rows, -1, layout);
}

// The layouts `isa` is benchmarked in.
std::vector<Layout> bench_layouts(const KernelBenchConfig& config, Isa isa) {
  std::vector<Layout> out;
  for (Layout l : kernel_layouts(isa)) {
    if (!config.layout || *config.layout == l) out.push_back(l);
  }
  return out;
}

}  // namespace

KernelBenchReport run_kernel_benchmark(
    const KernelBenchConfig& config, const std::function<void(const KernelBenchEvent&)>& on_event) {
  check_config(config);
  auto emit = [&](const KernelBenchEvent& e) {
    if (on_event) on_event(e);
  };
  std::vector<int> thread_counts = config.threads;
  std::sort(thread_counts.begin(), thread_counts.end());
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  Autotuner tuner(config.autotune, Autotuner::default_cache_file());
  std::map<int, std::unique_ptr<ThreadPool>> pools;
  for (int t : thread_counts) pools[t] = std::make_unique<ThreadPool>(t);

  KernelBenchReport report;
  const Isa probe_isa = available_isas().front();
  std::unique_ptr<BandwidthProbe> probe;
  if (config.bandwidth) {
    probe = std::make_unique<BandwidthProbe>();
    for (int t : thread_counts) {
      KernelBenchEvent event;
      event.kind = KernelBenchEvent::Kind::kBandwidth;
      event.threads = t;
      emit(event);
      report.bandwidth[t] = measure_read_bandwidth(*pools[t], probe_isa, *probe);
    }
  }
  // Matrices at least this large stream from memory, so their bandwidth fraction is measured
  // against paired probe samples; smaller ones are compared with the figure above.
  const std::size_t out_of_cache_bytes = std::max<std::size_t>(2 * cpu_info().l3_bytes, 1);

  // Per thread, from the latest case of each kernel and layout: to skip hopeless ones.
  std::map<std::pair<Isa, Layout>, double> macs_per_second;
  std::size_t kernels_run = 0;
  for (Isa isa : config.isas) kernels_run += bench_layouts(config, isa).size();
  const std::size_t total =
      config.shapes.size() * config.batches.size() * thread_counts.size() * kernels_run;
  std::size_t index = 0;
  for (const MatrixShape& shape : config.shapes) {
    for (Isa isa : config.isas) {
      for (Layout layout : bench_layouts(config, isa)) {
        std::map<int, PackedMatrix> packed;  // by tile_rows, for this shape, ISA and layout
        for (int batch : config.batches) {
          const PackedActivations x = random_activations(batch, shape.cols);
          std::vector<std::int32_t> y(static_cast<std::size_t>(batch * shape.rows));
          for (int t : thread_counts) {
            KernelBenchEvent event;
            event.index = ++index;
            event.total = total;
            event.isa = isa;
            event.layout = layout;
            event.shape = shape;
            event.batch = batch;
            event.threads = t;
            const double macs =
                static_cast<double>(shape.rows) * static_cast<double>(shape.cols) * batch;
            if (auto it = macs_per_second.find({isa, layout}); it != macs_per_second.end()) {
              const double estimate = macs / (it->second * t);
              if (estimate > config.max_seconds_per_call) {
                report.notes.push_back(fmt::format(
                    "skipped {} {}x{} b{} t{}: about {:.0f} s per call at the speed seen so far; "
                    "run it alone with --isa {} --shape {}x{} -b {} -t {} to measure it",
                    kernel_info(isa).name, shape.rows, shape.cols, batch, t, estimate,
                    isa_name(isa), shape.rows, shape.cols, batch, t));
                event.kind = KernelBenchEvent::Kind::kSkipped;
                event.estimate_seconds = estimate;
                emit(event);
                continue;
              }
            }
            const Plan plan =
                tuner.plan(PlanRequest{shape.rows, shape.cols, batch, isa, 0, layout}, *pools[t]);
            auto it = packed.find(plan.tile_rows);
            if (it == packed.end()) {
              event.kind = KernelBenchEvent::Kind::kPacking;
              emit(event);
              it =
                  packed
                      .emplace(plan.tile_rows, benchmark_matrix(shape, isa, layout, plan.tile_rows))
                      .first;
            }
            it->second.variant = plan.variant;
            KernelBenchResult r;
            r.isa = isa;
            r.shape = shape;
            r.batch = batch;
            r.threads = t;
            r.plan = plan;
            r.weight_bytes = it->second.weight_bytes();
            const bool paired = probe && r.weight_bytes >= out_of_cache_bytes;
            const Timing timing =
                time_calls(it->second, x, plan.token_block, *pools[t], y, config.reps,
                           paired ? probe.get() : nullptr, probe_isa);
            r.seconds = timing.seconds;
            r.gops = 2 * macs / r.seconds.median / 1e9;
            r.weight_gbps = static_cast<double>(r.weight_bytes) / r.seconds.median / 1e9;
            if (paired) {
              r.bw_fraction = timing.bw_fraction;
            } else if (auto b = report.bandwidth.find(t); b != report.bandwidth.end()) {
              r.bw_fraction = r.weight_gbps / b->second.median_gbps;
            }
            macs_per_second[{isa, layout}] = macs / r.seconds.median / t;
            report.results.push_back(r);
            event.kind = KernelBenchEvent::Kind::kDone;
            event.result = &report.results.back();
            emit(event);
          }
        }
      }
    }
  }
  relate(report.results);
  return report;
}

}  // namespace nanochat::kernels
