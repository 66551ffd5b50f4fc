// Q8_0 reference: exact int32 block sums, fp32 across blocks in block order.
#include <cstdint>

#include "nanochat/kernels/q8.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {
namespace {

void rows(const Q8Matrix& w, const PackedActivations& x, std::int64_t b, std::int64_t begin,
          std::int64_t end, float* y) {
  const std::int8_t* xb = x.token(b);
  const float xs = x.scales[static_cast<std::size_t>(b)];
  const std::int64_t blocks = w.cols_padded / 32;
  for (std::int64_t r = begin; r < end; ++r) {
    const std::int8_t* q = w.q.data() + r * w.cols_padded;
    const std::uint16_t* d = w.d.data() + r * blocks;
    float acc = 0;
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      std::int32_t sum = 0;
      for (int i = 0; i < 32; ++i) sum += q[blk * 32 + i] * xb[blk * 32 + i];
      acc += fp16_to_fp32(d[blk]) * static_cast<float>(sum);
    }
    y[r] = acc * xs;
  }
}

}  // namespace

Q8RowsFn q8_rows_scalar() { return rows; }

}  // namespace nanochat::kernels
