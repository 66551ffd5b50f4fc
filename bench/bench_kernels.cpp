// Google Benchmark programs for the ternary kernels: GEMV (1 token) and GEMM (64 tokens) on the
// BitNet b1.58 2B shapes and one matrix far larger than the L3 cache, for every ISA this CPU
// has, single-threaded and on all physical cores. `nanochat benchmark kernels` reports the same
// cases with bandwidth ratios; this program is for A/B comparisons with Google Benchmark's tools
// (e.g. --benchmark_repetitions=9 --benchmark_report_aggregates_only=true, compare.py).
// The output heads too: a 2B model's vocabulary (128256 x 2560) as Q8_0 and every block type with
// head kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), one token, the weights far past the
// cache as in decoding (`head/...`).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/kquant.hpp"
#include "nanochat/kernels/q8.hpp"
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

// Head matrices, each built on first use and kept for every ISA and thread count, and one
// token. Rows are drawn from a generator seeded by the row (the same weights for every type).
struct HeadFixture {
  Q8Matrix q8;
  std::map<std::string, KQuantMatrix> blocks;  // by lower-case type name
  PackedActivations x;
  std::vector<float> y;
};

constexpr std::int64_t kHeadRows = 128256, kHeadCols = 2560;

void head_row(std::int64_t r, std::span<float> v) {
  std::mt19937 rng(static_cast<std::uint32_t>(r));
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (auto& x : v) x = normal(rng);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

HeadFixture& head_fixture(const std::string& type) {
  static std::unique_ptr<HeadFixture> f;
  ThreadPool pool(default_thread_count());
  if (!f) {
    f = std::make_unique<HeadFixture>();
    std::vector<std::int8_t> a(static_cast<std::size_t>(kHeadCols));
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> act(-127, 127);
    for (auto& v : a) v = static_cast<std::int8_t>(act(rng));
    pack_activations_i8(a.data(), 1, kHeadCols, f->x);
    f->y.resize(static_cast<std::size_t>(kHeadRows));
  }
  if (type == "q8_0" && f->q8.rows == 0)
    f->q8 = quantize_q8_0_matrix(kHeadRows, kHeadCols, head_row, pool);
  for (const KQuantType kq : kKQuantTypes) {
    if (lower(kquant_name(kq)) != type || f->blocks.count(type) != 0) continue;
    const auto row_bytes =
        static_cast<std::size_t>(kHeadCols / kquant_block_weights(kq) * kquant_block_bytes(kq));
    std::vector<std::uint8_t> data(static_cast<std::size_t>(kHeadRows) * row_bytes);
    pool.parallel_for(kHeadRows, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> row(static_cast<std::size_t>(kHeadCols));
      for (std::int64_t r = begin; r < end; ++r) {
        head_row(r, row);
        quantize_row_kquant(
            kq, row, std::span(data).subspan(static_cast<std::size_t>(r) * row_bytes, row_bytes));
      }
    });
    f->blocks.emplace(type, pack_kquant(kq, data, kHeadRows, kHeadCols, pool));
  }
  return *f;
}

void BM_Head(benchmark::State& state, Isa isa, const std::string& type, int threads) {
  HeadFixture& f = head_fixture(type);
  ThreadPool pool(threads);
  const auto it = f.blocks.find(type);
  const KQuantMatrix* kq = it != f.blocks.end() ? &it->second : nullptr;
  for (auto _ : state) {
    if (kq != nullptr) {
      kquant_matmul(*kq, f.x, isa, pool, f.y.data(), f.y.size());
    } else {
      q8_matmul(f.q8, f.x, isa, pool, f.y.data(), f.y.size());
    }
    benchmark::DoNotOptimize(f.y.data());
  }
  const double bytes = kq != nullptr ? static_cast<double>(kq->data.size())
                                     : static_cast<double>(f.q8.q.size() + 2 * f.q8.d.size());
  state.counters["weights_B/s"] =
      benchmark::Counter(bytes * static_cast<double>(state.iterations()),
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
  for (Isa isa : available_isas()) {
    std::vector<std::string> types = {"q8_0"};
    for (const KQuantType kq : kKQuantTypes) types.push_back(lower(kquant_name(kq)));
    for (const std::string& type : types) {
      for (int threads : {1, cores}) {
        const std::string name =
            "head/" + type + "/" + isa_name(isa) + "/128256x2560/b1/t" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), BM_Head, isa, type, threads)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        if (cores == 1) break;
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
