// Q8_0 matrices (ggml type 8: blocks of 32 int8 weights with one fp16 scale) times int8
// activations — for the layers a ternary model keeps in 8 bits, such as BitNet's output head.
// y[b][m] = x_scale[b] * sum_blocks d[m][blk] * sum_{i in blk} q[m][i] * x_q[b][i]; the inner
// block sums are exact int32, the outer sum is fp32 (so ISAs agree to rounding, not bit for bit).
#pragma once

#include <cstdint>
#include <span>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/packed.hpp"
#include "nanochat/util/aligned.hpp"

namespace nanochat::kernels {

class ThreadPool;

struct Q8Matrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;         // a multiple of 32
  std::int64_t cols_padded = 0;  // a multiple of 256 (activation padding), zero weights beyond cols
  AlignedBuffer<std::int8_t> q;  // [rows][cols_padded]
  AlignedBuffer<float> d;        // [rows][cols_padded / 32]
};

// Repacks ggml Q8_0 bytes of a [rows][cols] matrix. Throws FormatError when cols % 32 != 0 or the
// byte count is wrong.
Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols);

// y[b * ldy + m] (fp32) for every token of `x` (x.cols == w.cols), rows split over the pool.
void q8_matmul(const Q8Matrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool, float* y,
               std::size_t ldy);

// Per-ISA row kernels: rows [row_begin, row_end) for token `b`.
using Q8RowsFn = void (*)(const Q8Matrix& w, const PackedActivations& x, std::int64_t b,
                          std::int64_t row_begin, std::int64_t row_end, float* y);
Q8RowsFn q8_rows_scalar();
Q8RowsFn q8_rows_avx2();
Q8RowsFn q8_rows_avx512();

}  // namespace nanochat::kernels
