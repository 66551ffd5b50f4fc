// Q8_0 matrices (ggml type 8: blocks of 32 int8 weights with one fp16 scale) times int8
// activations — for the layers a ternary model keeps in 8 bits, such as BitNet's output head.
// y[b][m] = x_scale[b] * sum_blocks d[m][blk] * sum_{i in blk} q[m][i] * x_q[b][i]; the inner
// block sums are exact int32, the outer sum is fp32 (so ISAs agree to rounding, not bit for bit).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

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
  AlignedBuffer<std::uint16_t> d;  // [rows][cols_padded / 32] fp16 block scales, as the file
                                   // stores them (half the bytes of fp32 per decoded token)
};

// Repacks ggml Q8_0 bytes of a [rows][cols] matrix, rows in order; `rows_done(n)`, when given, is
// told after each row that rows [0, n) have been read. Throws FormatError when cols % 32 != 0 or
// the byte count is wrong.
Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols,
                   const std::function<void(std::int64_t)>& rows_done = {});

// The same with the rows split over `pool` (the same matrix at any thread count);
// `rows_read(begin, end)`, when given, is told from each thread, concurrently, that rows
// [begin, end) have been read, a slab of at most `slab` rows at a time.
Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols,
                   ThreadPool& pool,
                   const std::function<void(std::int64_t, std::int64_t)>& rows_read = {},
                   std::int64_t slab = 1024);

// Quantizes 32 floats per block as ggml does: d = max|x| / 127 (stored fp16), q = round(x / d).
// x.size() must be a multiple of 32 and out.size() == x.size() / 32 * 34.
void quantize_row_q8_0(std::span<const float> x, std::span<std::uint8_t> out);

// A Q8Matrix quantized from float rows that `row` fills in (for float heads and tied embeddings).
Q8Matrix quantize_q8_0_matrix(std::int64_t rows, std::int64_t cols,
                              const std::function<void(std::int64_t, std::span<float>)>& row);
// The same with the rows split over `pool`: `row` is called concurrently for different rows (the
// same matrix at any thread count); `rows_read(begin, end)`, when given, is told from each thread
// that rows [begin, end) have been read, a slab of at most `slab` rows at a time.
Q8Matrix quantize_q8_0_matrix(std::int64_t rows, std::int64_t cols,
                              const std::function<void(std::int64_t, std::span<float>)>& row,
                              ThreadPool& pool,
                              const std::function<void(std::int64_t, std::int64_t)>& rows_read = {},
                              std::int64_t slab = 1024);

// y[b * ldy + m] (fp32) for every token of `x` (x.cols == w.cols), rows split over the pool.
void q8_matmul(const Q8Matrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool, float* y,
               std::size_t ldy);

// Per-ISA row kernels: rows [row_begin, row_end) for token `b`.
using Q8RowsFn = void (*)(const Q8Matrix& w, const PackedActivations& x, std::int64_t b,
                          std::int64_t row_begin, std::int64_t row_end, float* y);
Q8RowsFn q8_rows_scalar();
Q8RowsFn q8_rows_avx2();
// AVX-512: tokens [b0, b1) at once (each weight block read once for all of them) into
// y[b * ldy + row]; `corrections` holds q8_corrections(x). A token's results are the same bit for
// bit whichever tokens are computed with it.
using Q8TokensFn = void (*)(const Q8Matrix& w, const PackedActivations& x,
                            const std::int32_t* corrections, std::int64_t b0, std::int64_t b1,
                            std::int64_t row_begin, std::int64_t row_end, float* y,
                            std::size_t ldy);
Q8TokensFn q8_tokens_avx512();
// For each token and pair of 32-value blocks, 16 int32: -128 * (block sum of x) in lanes 0 and 8
// (the first block's and the second's), zero elsewhere.
void q8_corrections(const PackedActivations& x, std::vector<std::int32_t>& out);

}  // namespace nanochat::kernels
