// The autotuner: times the candidate kernels and tilings for a (shape, batch, threads) on this
// CPU, keeps the winner, and persists it in the cache directory keyed by CPU signature, so the
// next process starts with the answer. Dispatch (KernelContext) asks it for every plan.
//
// Thread-safety: all public members may be called from any thread; timing runs are serialised.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/packed.hpp"

namespace nanochat::kernels {

class ThreadPool;

// --autotune: on = use the cache, measure what is missing; off = no timing, built-in defaults;
// force = measure again and overwrite the cache.
enum class TuneMode { kOn, kOff, kForce };
TuneMode parse_tune_mode(std::string_view text);  // throws UsageError naming --autotune
const char* tune_mode_name(TuneMode mode);

// How to run one GEMM: which kernel, the weight layout and its tile height, tokens per pass.
struct Plan {
  Isa isa = Isa::kScalar;
  Layout layout = Layout::kTq2;  // one of kernel_layouts(isa)
  int tile_rows = 1;
  int token_block = 1;
  int variant = 0;         // single-token unpacking (KernelInfo::variants), kept in the matrix
  double ns_per_call = 0;  // median measured time; 0 for built-in defaults
  std::string source;      // "measured", "cache" or "default"
  // Timed with the weights evicted from the caches before each call (one-token plans of
  // matrices the cache could hold: decoding streams them from memory), not resident.
  bool weights_streamed = false;
};

// What a plan is for. Constraints narrow the candidates: `isa` (e.g. forced by NANOCHAT_ISA or
// fixed by an existing layout), `tile_rows` (0 = any) and `layout` (both fixed once a matrix is
// packed; the layout also by NANOCHAT_LAYOUT).
struct PlanRequest {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t batch = 1;
  std::optional<Isa> isa;
  int tile_rows = 0;
  std::optional<Layout> layout;
};

// Batches are tuned by class, not by exact size: 1, 2-3, 4-7, 8-31 and 32+ tokens (prefill and
// training; with 32 tokens the best tiling differs from 8's, e.g. 8x2 beats 4x4 by 8% at 64).
std::int64_t batch_class(std::int64_t batch);

class Autotuner {
 public:
  // `cache_file` empty: no persistence.
  Autotuner(TuneMode mode, std::filesystem::path cache_file);

  // cache_dir()/autotune-<cpu signature>.json
  static std::filesystem::path default_cache_file();

  // The plan for `request`: from memory or the cache, else measured now (mode on/force), or the
  // built-in default (mode off).
  Plan plan(const PlanRequest& request, ThreadPool& pool);
  // A known plan without measuring anything.
  std::optional<Plan> cached_plan(const PlanRequest& request, int threads) const;
  // The built-in choice used with --autotune off: widest ISA, its default layout, 4-row tiles,
  // widest token block, for one token the kernel's last variant.
  static Plan default_plan(const PlanRequest& request);

  TuneMode mode() const { return mode_; }
  const std::filesystem::path& cache_file() const { return cache_file_; }
  // Number of plans known (from the cache or measured in this process).
  std::size_t known_plans() const;

 private:
  Plan measure(const PlanRequest& request, ThreadPool& pool) const;
  void load_cache();
  void save_cache() const;
  static std::string key_of(const PlanRequest& request, int threads);

  TuneMode mode_;
  std::filesystem::path cache_file_;
  mutable std::mutex mutex_;
  std::map<std::string, Plan> plans_;
  std::map<std::string, Plan> measured_this_run_;  // force mode: measure each key once
  // Sustained read bandwidth (GB/s) by thread count, probed once per run when first needed.
  mutable std::map<int, double> read_gbps_;
};

}  // namespace nanochat::kernels
