#include "nanochat/kernels/dispatch.hpp"

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {

void run_gemm_i32(const PackedMatrix& w, const PackedActivations& x, int token_block,
                  ThreadPool& pool, std::int32_t* y, std::size_t ldy) {
  if (ldy < static_cast<std::size_t>(w.rows)) fail("ldy {} < rows {}", ldy, w.rows);
  const GemmFn gemm = kernel_info(w.isa).gemm;
  if (pool.size() == 1 || w.tiles < 2) {
    gemm(w, x, token_block, 0, w.tiles, y, ldy);
    return;
  }
  pool.parallel_for(w.tiles, [&](std::int64_t begin, std::int64_t end) {
    gemm(w, x, token_block, begin, end, y, ldy);
  });
}

KernelContext::KernelContext(const KernelOptions& options)
    : options_(options),
      pool_(options.threads > 0 ? options.threads : default_thread_count()),
      tuner_(options.tune, options.tune_cache) {}

Plan KernelContext::plan(std::int64_t rows, std::int64_t cols, std::int64_t batch) {
  return tuner_.plan(PlanRequest{rows, cols, batch, options_.isa, 0, options_.layout}, pool_);
}

PackedMatrix KernelContext::pack(std::int64_t rows, std::int64_t cols, const RowSource& source) {
  const Plan p = plan(rows, cols, 1);
  PackedMatrix m =
      pack_matrix(rows, cols, source, p.isa, p.tile_rows, options_.numa_node, p.layout);
  m.variant = p.variant;
  return m;
}

PackedMatrix KernelContext::pack_codes(std::int64_t rows, std::int64_t cols,
                                       const CodeSource& source) {
  const Plan p = plan(rows, cols, 1);
  PackedMatrix m = pack_matrix_codes(rows, cols, source, p.isa, p.tile_rows, pool_,
                                     options_.numa_node, p.layout);
  m.variant = p.variant;
  return m;
}

void KernelContext::pack_into(PackedMatrix& m, std::int64_t rows, std::int64_t cols,
                              const RowSource& source, std::int64_t batch) {
  const Plan p = plan(rows, cols, batch);
  if (m.rows == rows && m.cols == cols && m.isa == p.isa && m.layout == p.layout &&
      m.tile_rows == p.tile_rows && m.codes.data() != nullptr) {
    repack_matrix(m, source);
  } else {
    m = pack_matrix(rows, cols, source, p.isa, p.tile_rows, options_.numa_node, p.layout);
  }
  m.variant = p.variant;
}

void KernelContext::gemm_i32(const PackedMatrix& w, const PackedActivations& x, std::int32_t* y,
                             std::size_t ldy) {
  int token_block = 1;
  if (x.tokens > 1) {
    token_block =
        tuner_.plan(PlanRequest{w.rows, w.cols, x.tokens, w.isa, w.tile_rows, w.layout}, pool_)
            .token_block;
  }
  run_gemm_i32(w, x, token_block, pool_, y, ldy);
}

void KernelContext::matmul(const PackedMatrix& w, const PackedActivations& x, float* y,
                           std::size_t ldy) {
  // Grows only: matrices of several heights share it, and growing back would zero-fill it again.
  const auto need = static_cast<std::size_t>(x.tokens * w.rows);
  if (scratch_.size() < need) scratch_.resize(need);
  gemm_i32(w, x, scratch_.data(), static_cast<std::size_t>(w.rows));
  const auto scale = [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b) {
      scale_i32(scratch_.data() + b * w.rows, w.row_scales.data(),
                x.scales[static_cast<std::size_t>(b)], y + static_cast<std::size_t>(b) * ldy,
                w.rows);
    }
  };
  if (x.tokens * w.rows >= (1 << 16)) {  // a prefill's or a training step's worth
    pool_.parallel_for(x.tokens, scale);
  } else {
    scale(0, x.tokens);
  }
}

}  // namespace nanochat::kernels
