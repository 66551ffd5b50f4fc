#include "nanochat/kernels/q8.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {

namespace {

// An empty (zeroed) Q8Matrix for rows x cols; cols a positive multiple of 32.
// With `zero` false the rows are left for store_row to fill (padding included).
Q8Matrix allocate(std::int64_t rows, std::int64_t cols, bool zero = true) {
  if (rows <= 0 || cols <= 0 || cols % 32 != 0) {
    fail<FormatError>("a Q8_0 matrix needs rows of a multiple of 32 weights, not {}", cols);
  }
  Q8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.cols_padded = (cols + kChunk - 1) / kChunk * kChunk;
  const auto q = static_cast<std::size_t>(rows * m.cols_padded);
  const auto d = static_cast<std::size_t>(rows * m.cols_padded / 32);
  m.q = zero ? AlignedBuffer<std::int8_t>(q) : AlignedBuffer<std::int8_t>::uninitialized(q);
  m.d = zero ? AlignedBuffer<std::uint16_t>(d) : AlignedBuffer<std::uint16_t>::uninitialized(d);
  return m;
}

// Copies row `r` from ggml Q8_0 blocks (fp16 scale, 32 int8) into the runtime layout.
void store_row(Q8Matrix& m, std::int64_t r, const std::uint8_t* blocks) {
  const std::int64_t per_row = m.cols / 32;
  for (std::int64_t b = 0; b < per_row; ++b) {
    const std::uint8_t* src = blocks + b * 34;
    std::memcpy(&m.d[static_cast<std::size_t>(r * m.cols_padded / 32 + b)], src, 2);
    std::memcpy(m.q.data() + r * m.cols_padded + b * 32, src + 2, 32);
  }
  // Padding: zero weights (and scales) past cols, written here so that a buffer allocated
  // without zeroing is complete.
  std::memset(m.q.data() + r * m.cols_padded + m.cols, 0,
              static_cast<std::size_t>(m.cols_padded - m.cols));
  std::memset(m.d.data() + r * m.cols_padded / 32 + per_row, 0,
              static_cast<std::size_t>(m.cols_padded / 32 - per_row) * sizeof(std::uint16_t));
}

}  // namespace

Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols,
                   const std::function<void(std::int64_t)>& rows_done) {
  Q8Matrix m = allocate(rows, cols);
  const auto row_bytes = static_cast<std::size_t>(cols / 32 * 34);
  if (blocks.size() != static_cast<std::size_t>(rows) * row_bytes) {
    fail<FormatError>("a {}x{} Q8_0 matrix has {} bytes, not {}", rows, cols,
                      static_cast<std::size_t>(rows) * row_bytes, blocks.size());
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    store_row(m, r, blocks.data() + static_cast<std::size_t>(r) * row_bytes);
    if (rows_done) rows_done(r + 1);
  }
  return m;
}

Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols,
                   ThreadPool& pool,
                   const std::function<void(std::int64_t, std::int64_t)>& rows_read,
                   std::int64_t slab) {
  Q8Matrix m = allocate(rows, cols, /*zero=*/false);
  const auto row_bytes = static_cast<std::size_t>(cols / 32 * 34);
  if (blocks.size() != static_cast<std::size_t>(rows) * row_bytes) {
    fail<FormatError>("a {}x{} Q8_0 matrix has {} bytes, not {}", rows, cols,
                      static_cast<std::size_t>(rows) * row_bytes, blocks.size());
  }
  slab = std::max<std::int64_t>(slab, 1);
  pool.parallel_for(rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t first = begin; first < end; first += slab) {
      const std::int64_t last = std::min(end, first + slab);
      for (std::int64_t r = first; r < last; ++r) {
        store_row(m, r, blocks.data() + static_cast<std::size_t>(r) * row_bytes);
      }
      if (rows_read) rows_read(first, last);
    }
  });
  return m;
}

void quantize_row_q8_0(std::span<const float> x, std::span<std::uint8_t> out) {
  if (x.size() % 32 != 0 || out.size() != x.size() / 32 * 34) {
    fail("Q8_0 quantization needs whole 32-value blocks ({} values, {} bytes)", x.size(),
         out.size());
  }
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const float* v = x.data() + b * 32;
    float amax = 0;
    for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const std::uint16_t h = fp32_to_fp16(d);
    std::memcpy(out.data() + b * 34, &h, 2);
    for (std::size_t i = 0; i < 32; ++i) {
      out[b * 34 + 2 + i] =
          static_cast<std::uint8_t>(static_cast<std::int8_t>(std::lround(v[i] * id)));
    }
  }
}

Q8Matrix quantize_q8_0_matrix(std::int64_t rows, std::int64_t cols,
                              const std::function<void(std::int64_t, std::span<float>)>& row) {
  Q8Matrix m = allocate(rows, cols);
  std::vector<float> values(static_cast<std::size_t>(cols));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(cols / 32 * 34));
  for (std::int64_t r = 0; r < rows; ++r) {
    row(r, values);
    quantize_row_q8_0(values, bytes);
    store_row(m, r, bytes.data());
  }
  return m;
}

Q8Matrix quantize_q8_0_matrix(std::int64_t rows, std::int64_t cols,
                              const std::function<void(std::int64_t, std::span<float>)>& row,
                              ThreadPool& pool,
                              const std::function<void(std::int64_t, std::int64_t)>& rows_read,
                              std::int64_t slab) {
  Q8Matrix m = allocate(rows, cols, /*zero=*/false);
  slab = std::max<std::int64_t>(slab, 1);
  pool.parallel_for(rows, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> values(static_cast<std::size_t>(cols));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(cols / 32 * 34));
    for (std::int64_t first = begin; first < end; first += slab) {
      const std::int64_t last = std::min(end, first + slab);
      for (std::int64_t r = first; r < last; ++r) {
        row(r, values);
        quantize_row_q8_0(values, bytes);
        store_row(m, r, bytes.data());
      }
      if (rows_read) rows_read(first, last);
    }
  });
  return m;
}

void q8_corrections(const PackedActivations& x, std::vector<std::int32_t>& out) {
  const std::int64_t blocks = x.cols_padded / 32;  // cols_padded: a multiple of 256
  out.assign(static_cast<std::size_t>(x.tokens * (blocks / 2) * 16), 0);
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    const std::int8_t* xt = x.token(t);
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      std::int32_t sum = 0;
      for (int i = 0; i < 32; ++i) sum += xt[blk * 32 + i];
      out[static_cast<std::size_t>((t * (blocks / 2) + blk / 2) * 16 + (blk % 2) * 8)] = -128 * sum;
    }
  }
}

void q8_matmul(const Q8Matrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool, float* y,
               std::size_t ldy) {
  if (x.cols != w.cols)
    fail("activations have {} features but the Q8_0 matrix takes {}", x.cols, w.cols);
  // Rows in tiles that stay in the L2 cache while every token reads them: the matrix (a whole
  // vocabulary's head) streams from memory once per call, not once per token.
  constexpr std::int64_t kTileBytes = 128 << 10;
  const std::int64_t row_bytes = std::max<std::int64_t>(1, w.cols + w.cols / 32 * 2);
  const std::int64_t tile = std::max<std::int64_t>(1, kTileBytes / row_bytes);
  if (isa == Isa::kAvx512) {
    thread_local std::vector<std::int32_t> corrections;
    q8_corrections(x, corrections);
    // (A lambda names the running thread's thread_local: the workers get the caller's by pointer.)
    const std::int32_t* c = corrections.data();
    const Q8TokensFn tokens = q8_tokens_avx512();
    pool.parallel_for(w.rows, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r0 = begin; r0 < end; r0 += tile) {
        tokens(w, x, c, 0, x.tokens, r0, std::min(end, r0 + tile), y, ldy);
      }
    });
    return;
  }
  const Q8RowsFn rows = isa == Isa::kAvx2 ? q8_rows_avx2() : q8_rows_scalar();
  pool.parallel_for(w.rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r0 = begin; r0 < end; r0 += tile) {
      const std::int64_t r1 = std::min(end, r0 + tile);
      for (std::int64_t b = 0; b < x.tokens; ++b)
        rows(w, x, b, r0, r1, y + static_cast<std::size_t>(b) * ldy);
    }
  });
}

}  // namespace nanochat::kernels
