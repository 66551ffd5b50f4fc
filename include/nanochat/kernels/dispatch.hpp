// Dispatch: runs ternary GEMV/GEMM on the thread pool with the kernel and tiling the autotuner
// chose. The model, the trainer and the benchmarks all go through here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "nanochat/kernels/autotune.hpp"
#include "nanochat/kernels/packed.hpp"
#include "nanochat/kernels/thread_pool.hpp"

namespace nanochat::kernels {

// y[b * ldy + row] = sum_k W[row, k] * x_q[b, k] (exact int32) with w's kernel, `token_block`
// tokens per pass, the tiles split evenly over the pool. Every row is computed by exactly one
// thread with the same instruction sequence, so results do not depend on the thread count.
void run_gemm_i32(const PackedMatrix& w, const PackedActivations& x, int token_block,
                  ThreadPool& pool, std::int32_t* y, std::size_t ldy);

struct KernelOptions {
  int threads = 0;  // 0: physical cores
  TuneMode tune = TuneMode::kOn;
  std::optional<Isa> isa;        // forced path (already validated), else the best available
  std::optional<Layout> layout;  // forced weight layout (validated with isa), else the tuner's
  std::filesystem::path tune_cache = Autotuner::default_cache_file();  // empty: in memory only
  int numa_node = -1;
};

// Thread pool + autotuner: what a model or a trainer holds to run its matrices.
class KernelContext {
 public:
  explicit KernelContext(const KernelOptions& options);

  ThreadPool& pool() { return pool_; }
  Autotuner& tuner() { return tuner_; }
  int threads() const { return pool_.size(); }
  // The forced ISA, else the best this CPU has (for kernels the tuner does not plan, e.g. Q8_0).
  Isa isa() const { return options_.isa ? *options_.isa : available_isas().front(); }

  // The plan for a (rows x cols) matrix used with `batch` tokens.
  Plan plan(std::int64_t rows, std::int64_t cols, std::int64_t batch);

  // Packs a matrix in the layout its single-token plan wants (decode dominates run time).
  PackedMatrix pack(std::int64_t rows, std::int64_t cols, const RowSource& source);
  // The same from code rows (pack_matrix_codes), on the pool: how models repack at load.
  PackedMatrix pack_codes(std::int64_t rows, std::int64_t cols, const CodeSource& source);
  // The same into `m`, reusing its memory when it already holds a matrix of this shape. `batch`
  // names the tokens per call the matrix will mostly see: the trainer's matrices multiply whole
  // batches, so their layout is the one the batched plan wants.
  void pack_into(PackedMatrix& m, std::int64_t rows, std::int64_t cols, const RowSource& source,
                 std::int64_t batch = 1);

  // Exact int32 products, token_block from the tuner for this layout and batch.
  void gemm_i32(const PackedMatrix& w, const PackedActivations& x, std::int32_t* y,
                std::size_t ldy);

  // Dequantized products: y[b * ldy + row] = i32 * row_scales[row] * x.scales[b].
  void matmul(const PackedMatrix& w, const PackedActivations& x, float* y, std::size_t ldy);

 private:
  KernelOptions options_;
  ThreadPool pool_;
  Autotuner tuner_;
  std::vector<std::int32_t> scratch_;
};

}  // namespace nanochat::kernels
