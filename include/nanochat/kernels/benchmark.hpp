// The kernel benchmark: times every kernel path on GEMV (1 token) and GEMM (a batch) for each
// shape and thread count, with the tiling the autotuner picks, and relates the weight stream to
// this machine's read bandwidth measured in the same run. `nanochat benchmark kernels` draws it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nanochat/kernels/autotune.hpp"
#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/membw.hpp"
#include "nanochat/kernels/packed.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::kernels {

struct MatrixShape {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

struct KernelBenchConfig {
  std::vector<MatrixShape> shapes;
  std::vector<int> threads;  // sorted and deduplicated by the benchmark
  std::vector<int> batches;
  std::vector<Isa> isas;  // scalar first gives the reference for the speedups
  // Only this weight layout (NANOCHAT_LAYOUT); else each ISA is run in every layout it has here.
  std::optional<Layout> layout;
  int reps = 7;           // timed samples per case (fewer for cases slower than 0.25 s)
  bool bandwidth = true;  // measure read bandwidth per thread count
  TuneMode autotune = TuneMode::kOn;
  // A case whose single call would take longer than this, judged from the kernel's speed on
  // earlier cases, is skipped (and said so in the notes).
  double max_seconds_per_call = 2.0;
};

struct KernelBenchResult {
  Isa isa = Isa::kScalar;
  MatrixShape shape;
  int batch = 1;
  int threads = 1;
  Plan plan;
  Summary seconds;
  std::size_t weight_bytes = 0;
  double gops = 0;
  double weight_gbps = 0;
  double bw_fraction = 0;  // of the read bandwidth at this thread count; 0 when not measured
  double vs_scalar = 0;    // scalar time / this time, same case; 0 when scalar was not run
  double token_cost = 0;   // time per token / time of the b=1 case, same kernel; 0 for b=1
};

struct KernelBenchReport {
  std::map<int, Bandwidth> bandwidth;  // by thread count
  std::vector<KernelBenchResult> results;
  std::vector<std::string> notes;  // skipped cases, with the command that measures each alone
};

// What the benchmark is doing, for a progress display. `result` is set for kDone only.
struct KernelBenchEvent {
  enum class Kind { kBandwidth, kPacking, kDone, kSkipped };
  Kind kind = Kind::kDone;
  std::size_t index = 0;  // 1-based case number (0 for kBandwidth)
  std::size_t total = 0;
  Isa isa = Isa::kScalar;
  Layout layout = Layout::kTq2;
  MatrixShape shape;
  int batch = 0;
  int threads = 0;
  double estimate_seconds = 0;  // kSkipped: the estimated time per call
  const KernelBenchResult* result = nullptr;
};

// Runs every case of `config`; throws InvalidArgument for an empty list or a non-positive value.
KernelBenchReport run_kernel_benchmark(
    const KernelBenchConfig& config, const std::function<void(const KernelBenchEvent&)>& on_event);

}  // namespace nanochat::kernels
