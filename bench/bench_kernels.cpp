// Google Benchmark programs for the ternary kernels: GEMV (1 token) and GEMM (64 tokens) on the
// BitNet b1.58 2B shapes and one matrix far larger than the L3 cache, for every ISA this CPU
// has, single-threaded and on all physical cores. `nanochat benchmark kernels` reports the same
// cases with bandwidth ratios; this program is for A/B comparisons with Google Benchmark's tools
// (e.g. --benchmark_repetitions=9 --benchmark_report_aggregates_only=true, compare.py).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/registry.hpp"

namespace nanochat::kernels {
namespace {

struct Fixture {
  PackedMatrix w;
  PackedActivations x;
  std::vector<std::int32_t> y;
};

// One packed matrix per (isa, shape, batch), built on first use.
Fixture& fixture(Isa isa, std::int64_t rows, std::int64_t cols, std::int64_t batch) {
  static std::map<std::tuple<Isa, std::int64_t, std::int64_t, std::int64_t>,
                  std::unique_ptr<Fixture>>
      cache;
  auto& slot = cache[{isa, rows, cols, batch}];
  if (!slot) {
    slot = std::make_unique<Fixture>();
    std::mt19937 rng(42);
    std::uniform_int_distribution<int> trit(-1, 1), act(-127, 127);
    slot->w = pack_matrix(
        rows, cols,
        [&](std::int64_t, std::span<std::int8_t> t) {
          for (auto& v : t) v = static_cast<std::int8_t>(trit(rng));
        },
        isa, kernel_info(isa).tile_rows.back());
    std::vector<std::int8_t> a(static_cast<std::size_t>(batch * cols));
    for (auto& v : a) v = static_cast<std::int8_t>(act(rng));
    pack_activations_i8(a.data(), batch, cols, slot->x);
    slot->y.resize(static_cast<std::size_t>(batch * rows));
  }
  return *slot;
}

void BM_Gemm(benchmark::State& state, Isa isa, std::int64_t rows, std::int64_t cols,
             std::int64_t batch, int threads) {
  Fixture& f = fixture(isa, rows, cols, batch);
  ThreadPool pool(threads);
  const int token_block = batch > 1 ? kernel_info(isa).token_blocks.back() : 1;
  for (auto _ : state) {
    run_gemm_i32(f.w, f.x, token_block, pool, f.y.data(), static_cast<std::size_t>(rows));
    benchmark::DoNotOptimize(f.y.data());
  }
  const auto items = static_cast<std::int64_t>(state.iterations()) * rows * cols * batch;
  state.counters["GOPS"] = benchmark::Counter(
      2.0 * static_cast<double>(items), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["weights_B/s"] = benchmark::Counter(
      static_cast<double>(f.w.weight_bytes()) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
}

void register_all() {
  const std::tuple<std::int64_t, std::int64_t> shapes[] = {
      {2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}, {65536, 16384}};
  const int cores = default_thread_count();
  for (Isa isa : available_isas()) {
    for (const auto& [rows, cols] : shapes) {
      for (std::int64_t batch : {1, 64}) {
        // The scalar reference on the large matrix with 64 tokens takes minutes per call.
        if (isa == Isa::kScalar && rows * cols * batch > (std::int64_t{1} << 31)) continue;
        for (int threads : {1, cores}) {
          const std::string name = std::string("gemm/") + isa_name(isa) + "/" +
                                   std::to_string(rows) + "x" + std::to_string(cols) + "/b" +
                                   std::to_string(batch) + "/t" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), BM_Gemm, isa, rows, cols, batch, threads)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
          if (cores == 1) break;
        }
      }
    }
  }
}

}  // namespace
}  // namespace nanochat::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  nanochat::kernels::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
