#include "nanochat/kernels/q8.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {

Q8Matrix pack_q8_0(std::span<const std::uint8_t> blocks, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0 || cols % 32 != 0) {
    fail<FormatError>("a Q8_0 matrix needs rows of a multiple of 32 weights, not {}", cols);
  }
  const auto n_blocks = static_cast<std::size_t>(rows * cols / 32);
  if (blocks.size() != n_blocks * 34) {
    fail<FormatError>("a {}x{} Q8_0 matrix has {} bytes, not {}", rows, cols, n_blocks * 34,
                      blocks.size());
  }
  Q8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.cols_padded = (cols + kChunk - 1) / kChunk * kChunk;
  m.q = AlignedBuffer<std::int8_t>(static_cast<std::size_t>(rows * m.cols_padded));
  m.d = AlignedBuffer<std::uint16_t>(static_cast<std::size_t>(rows * m.cols_padded / 32));
  const std::int64_t per_row = cols / 32, per_row_padded = m.cols_padded / 32;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t b = 0; b < per_row; ++b) {
      const std::uint8_t* src = blocks.data() + static_cast<std::size_t>((r * per_row + b) * 34);
      std::uint16_t h;
      std::memcpy(&h, src, 2);
      m.d[static_cast<std::size_t>(r * per_row_padded + b)] = h;
      std::memcpy(m.q.data() + r * m.cols_padded + b * 32, src + 2, 32);
    }
  }
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
  if (rows <= 0 || cols <= 0 || cols % 32 != 0) {
    fail<FormatError>("a Q8_0 matrix needs rows of a multiple of 32 weights, not {}", cols);
  }
  Q8Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.cols_padded = (cols + kChunk - 1) / kChunk * kChunk;
  m.q = AlignedBuffer<std::int8_t>(static_cast<std::size_t>(rows * m.cols_padded));
  m.d = AlignedBuffer<std::uint16_t>(static_cast<std::size_t>(rows * m.cols_padded / 32));
  const auto per_row = static_cast<std::size_t>(cols / 32);
  std::vector<float> values(static_cast<std::size_t>(cols));
  std::vector<std::uint8_t> bytes(per_row * 34);
  for (std::int64_t r = 0; r < rows; ++r) {
    row(r, values);
    quantize_row_q8_0(values, bytes);
    for (std::size_t b = 0; b < per_row; ++b) {
      std::uint16_t h;
      std::memcpy(&h, bytes.data() + b * 34, 2);
      m.d[static_cast<std::size_t>(r * m.cols_padded / 32) + b] = h;
      std::memcpy(m.q.data() + r * m.cols_padded + static_cast<std::int64_t>(b) * 32,
                  bytes.data() + b * 34 + 2, 32);
    }
  }
  return m;
}

void q8_matmul(const Q8Matrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool, float* y,
               std::size_t ldy) {
  if (x.cols != w.cols)
    fail("activations have {} features but the Q8_0 matrix takes {}", x.cols, w.cols);
  const Q8RowsFn rows = isa == Isa::kAvx512 ? q8_rows_avx512()
                        : isa == Isa::kAvx2 ? q8_rows_avx2()
                                            : q8_rows_scalar();
  pool.parallel_for(w.rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = 0; b < x.tokens; ++b)
      rows(w, x, b, begin, end, y + static_cast<std::size_t>(b) * ldy);
  });
}

}  // namespace nanochat::kernels
