#include "nanochat/kernels/kquant.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {

namespace {

// One row per type: what the names, the packing and its checks, the quantizers and the error
// messages read. Offsets are of the fp16 scale d and of the second fp16 scale (dmin or m; the
// same as d when there is none).
struct BlockLayout {
  KQuantType type;
  const char* name;
  std::uint32_t ggml;
  std::int64_t weights, bytes;
  std::size_t d, second;
};

constexpr BlockLayout kBlockLayouts[] = {
    {KQuantType::kQ4_0, "Q4_0", 2, 32, 18, 0, 0},
    {KQuantType::kQ4_1, "Q4_1", 3, 32, 20, 0, 2},
    {KQuantType::kQ5_0, "Q5_0", 6, 32, 22, 0, 0},
    {KQuantType::kQ5_1, "Q5_1", 7, 32, 24, 0, 2},
    {KQuantType::kQ4_K, "Q4_K", 12, 256, 144, 0, 2},
    {KQuantType::kQ5_K, "Q5_K", 13, 256, 176, 0, 2},
    {KQuantType::kQ6_K, "Q6_K", 14, 256, 210, 208, 208},
};

const BlockLayout& layout(KQuantType type) {
  for (const BlockLayout& l : kBlockLayouts) {
    if (l.type == type) return l;
  }
  throw InternalError(fmt::format("no K-quant layout for type {}", static_cast<int>(type)));
}

}  // namespace

std::uint32_t kquant_ggml_type(KQuantType type) { return layout(type).ggml; }

bool kquant_from_ggml(std::uint32_t ggml_type, KQuantType& type) {
  for (const BlockLayout& l : kBlockLayouts) {
    if (l.ggml == ggml_type) {
      type = l.type;
      return true;
    }
  }
  return false;
}

const char* kquant_name(KQuantType type) { return layout(type).name; }
std::int64_t kquant_block_weights(KQuantType type) { return layout(type).weights; }
std::int64_t kquant_block_bytes(KQuantType type) { return layout(type).bytes; }

void q4_k_scales(const std::uint8_t* packed, std::uint8_t* scales, std::uint8_t* mins) {
  // Sub-blocks 0-3: the low 6 bits of bytes 0-3 (scales) and 4-7 (mins). Sub-blocks 4-7: the
  // low (scale) and high (min) nibble of bytes 8-11, with the two top bits of bytes 0-3 (scale)
  // and 4-7 (min) above them.
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
    scales[j + 4] = static_cast<std::uint8_t>((packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4));
    mins[j + 4] = static_cast<std::uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
  }
}

namespace {

void quantize_q6_k(const float* x, std::uint8_t* b) {
  std::memset(b, 0, 210);
  float scale[16], top = 0;
  for (int j = 0; j < 16; ++j) {
    float amax = 0;
    for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(x[16 * j + i]));
    scale[j] = amax / 31.0f;
    top = std::max(top, scale[j]);
  }
  const std::uint16_t dh = fp32_to_fp16(top / 127.0f);
  const float d = fp16_to_fp32(dh);
  std::memcpy(b + 208, &dh, 2);
  for (int j = 0; j < 16; ++j) {
    const int sc = d > 0 ? std::clamp(static_cast<int>(std::lround(scale[j] / d)), -128, 127) : 0;
    b[192 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sc));
    for (int i = 0; i < 16; ++i) {
      const int at = 16 * j + i;
      const float step = d * static_cast<float>(sc);
      const int q =
          step != 0 ? std::clamp(static_cast<int>(std::lround(x[at] / step)) + 32, 0, 63) : 32;
      const int half = at / 128, r = at % 128, g = r / 32, l = r % 32;
      std::uint8_t& low = b[half * 64 + (g % 2) * 32 + l];
      low = static_cast<std::uint8_t>(low | ((q & 0x0F) << (g >= 2 ? 4 : 0)));
      b[128 + half * 32 + l] =
          static_cast<std::uint8_t>(b[128 + half * 32 + l] | ((q >> 4) << (2 * g)));
    }
  }
}

// Q4_K (five == false) and Q5_K: 8 sub-blocks of 32 with a 6-bit scale and min each; Q5_K's
// fifth bits in qh (bit j of byte 16 + i for value i of sub-block j).
void quantize_k_with_min(const float* x, std::uint8_t* b, bool five) {
  const int top_q = five ? 31 : 15;
  const std::size_t qs_at = five ? 48 : 16;
  std::memset(b, 0, five ? 176 : 144);
  float scale[8], offset[8], top_scale = 0, top_offset = 0;
  for (int j = 0; j < 8; ++j) {
    float lo = 0, hi = 0;  // the range, widened to include 0: w = step * q - offset, offset >= 0
    for (int i = 0; i < 32; ++i) {
      lo = std::min(lo, x[32 * j + i]);
      hi = std::max(hi, x[32 * j + i]);
    }
    scale[j] = (hi - lo) / static_cast<float>(top_q);
    offset[j] = -lo;
    top_scale = std::max(top_scale, scale[j]);
    top_offset = std::max(top_offset, offset[j]);
  }
  const std::uint16_t dh = fp32_to_fp16(top_scale / 63.0f), mh = fp32_to_fp16(top_offset / 63.0f);
  const float d = fp16_to_fp32(dh), dmin = fp16_to_fp32(mh);
  std::memcpy(b, &dh, 2);
  std::memcpy(b + 2, &mh, 2);
  std::uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<std::uint8_t>(
        d > 0 ? std::clamp(static_cast<int>(std::lround(scale[j] / d)), 0, 63) : 0);
    mn[j] = static_cast<std::uint8_t>(
        dmin > 0 ? std::clamp(static_cast<int>(std::lround(offset[j] / dmin)), 0, 63) : 0);
    const float step = d * sc[j], off = dmin * mn[j];
    for (int i = 0; i < 32; ++i) {
      const int at = 32 * j + i;
      const int q =
          step > 0 ? std::clamp(static_cast<int>(std::lround((x[at] + off) / step)), 0, top_q) : 0;
      std::uint8_t& byte = b[qs_at + 32 * (j / 2) + i];
      byte = static_cast<std::uint8_t>(byte | ((q & 0x0F) << (j % 2 == 1 ? 4 : 0)));
      if (q > 15) b[16 + i] = static_cast<std::uint8_t>(b[16 + i] | (1 << j));
    }
  }
  for (int j = 0; j < 4; ++j) {  // the inverse of q4_k_scales
    b[4 + j] = static_cast<std::uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    b[4 + j + 4] = static_cast<std::uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    b[4 + j + 8] = static_cast<std::uint8_t>((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
  }
}

// The 32-weight types, as ggml's reference quantizers: Q4_0 / Q5_0 from the value of largest
// magnitude (d = that value / -8 or / -16, so it lands on q = 0), Q4_1 / Q5_1 from the range
// (m = the minimum). Byte i of the 16 nibble bytes holds value i (low) and i + 16 (high); Q5's
// fifth bit of value i is bit i of the 32-bit qh.
void quantize_32(KQuantType type, const float* x, std::uint8_t* b) {
  const bool five = type == KQuantType::kQ5_0 || type == KQuantType::kQ5_1;
  const bool with_min = type == KQuantType::kQ4_1 || type == KQuantType::kQ5_1;
  const int levels = five ? 32 : 16, zero_at = levels / 2;
  float lo = x[0], hi = x[0], extreme = 0;
  for (int i = 0; i < 32; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  const std::uint16_t dh = fp32_to_fp16(with_min ? (hi - lo) / static_cast<float>(levels - 1)
                                                 : extreme / static_cast<float>(-zero_at));
  const std::uint16_t mh = fp32_to_fp16(lo);
  const float d = fp16_to_fp32(dh), m = fp16_to_fp32(mh);
  std::memcpy(b, &dh, 2);
  if (with_min) std::memcpy(b + 2, &mh, 2);
  std::uint8_t* qh = b + (with_min ? 4 : 2);
  std::uint8_t* qs = qh + (five ? 4 : 0);
  std::uint32_t high = 0;
  std::memset(qs, 0, 16);
  for (int i = 0; i < 32; ++i) {
    const float v = with_min ? (x[i] - m) / d : x[i] / d + static_cast<float>(zero_at);
    const int q = d != 0 ? std::clamp(static_cast<int>(std::lround(v)), 0, levels - 1)
                         : (with_min ? 0 : zero_at);
    qs[i % 16] = static_cast<std::uint8_t>(qs[i % 16] | ((q & 0x0F) << (i >= 16 ? 4 : 0)));
    if (q > 15) high |= 1u << i;
  }
  if (five) std::memcpy(qh, &high, 4);
}

}  // namespace

KQuantMatrix pack_kquant(KQuantType type, std::span<const std::uint8_t> blocks, std::int64_t rows,
                         std::int64_t cols, ThreadPool& pool,
                         const std::function<void(std::int64_t, std::int64_t)>& rows_read,
                         std::int64_t slab) {
  const BlockLayout& l = layout(type);
  if (rows <= 0) fail<FormatError>("a {} matrix needs at least one row, not {}", l.name, rows);
  if (cols <= 0 || cols % l.weights != 0) {
    fail<FormatError>("a {} matrix needs rows of a multiple of {} weights, not {}", l.name,
                      l.weights, cols);
  }
  KQuantMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = cols / l.weights * l.bytes;
  const auto total = static_cast<std::size_t>(rows * m.row_bytes);
  if (blocks.size() != total) {
    fail<FormatError>("a {}x{} {} matrix has {} bytes, not {}", rows, cols, l.name, total,
                      blocks.size());
  }
  m.data = AlignedBuffer<std::uint8_t>::uninitialized(total);
  slab = std::max<std::int64_t>(slab, 1);
  const std::int64_t per_row = cols / l.weights;
  const auto block_bytes = static_cast<std::size_t>(l.bytes);
  // A block scale of infinity or NaN (fp16 exponent all ones) would make that logit NaN (dmin or
  // m as well as d): each slab is checked right after its copy, and the lowest bad row named.
  const auto bad_scale = [&](std::int64_t blk) {
    const std::uint8_t* b = m.data.data() + static_cast<std::size_t>(blk) * block_bytes;
    return (fp16_bits(b + l.d) & 0x7c00u) == 0x7c00u ||
           (fp16_bits(b + l.second) & 0x7c00u) == 0x7c00u;
  };
  std::atomic<std::int64_t> bad_row{rows};
  pool.parallel_for(rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t first = begin; first < end; first += slab) {
      const std::int64_t last = std::min(end, first + slab);
      const auto offset = static_cast<std::size_t>(first * m.row_bytes);
      std::memcpy(m.data.data() + offset, blocks.data() + offset,
                  static_cast<std::size_t>((last - first) * m.row_bytes));
      for (std::int64_t blk = first * per_row; blk < last * per_row; ++blk) {
        if (!bad_scale(blk)) continue;
        std::int64_t seen = bad_row.load();
        while (blk / per_row < seen && !bad_row.compare_exchange_weak(seen, blk / per_row)) {
        }
        break;
      }
      if (rows_read) rows_read(first, last);
    }
  });
  if (const std::int64_t row = bad_row.load(); row < rows) {
    for (std::int64_t blk = row * per_row;; ++blk) {
      if (!bad_scale(blk)) continue;
      const std::uint8_t* b = m.data.data() + static_cast<std::size_t>(blk) * block_bytes;
      const bool d_bad = (fp16_bits(b + l.d) & 0x7c00u) == 0x7c00u;
      fail<FormatError>("row {} has a block scale that is {}", row,
                        fp16_to_fp32(fp16_bits(b + (d_bad ? l.d : l.second))));
    }
  }
  return m;
}

void quantize_row_kquant(KQuantType type, std::span<const float> x, std::span<std::uint8_t> out) {
  const BlockLayout& l = layout(type);
  const auto weights = static_cast<std::size_t>(l.weights);
  const auto bytes = static_cast<std::size_t>(l.bytes);
  if (x.size() % weights != 0 || out.size() != x.size() / weights * bytes) {
    fail("{} quantization needs whole {}-value blocks ({} values, {} bytes)", l.name, weights,
         x.size(), out.size());
  }
  for (std::size_t blk = 0; blk < x.size() / weights; ++blk) {
    const float* v = x.data() + blk * weights;
    std::uint8_t* b = out.data() + blk * bytes;
    switch (type) {
      case KQuantType::kQ6_K:
        quantize_q6_k(v, b);
        break;
      case KQuantType::kQ4_K:
      case KQuantType::kQ5_K:
        quantize_k_with_min(v, b, type == KQuantType::kQ5_K);
        break;
      default:
        quantize_32(type, v, b);
        break;
    }
  }
}

void kquant_sums(KQuantType type, const PackedActivations& x, std::int64_t cols, Isa isa,
                 KQuantSums& out) {
  out.tokens = x.tokens;
  out.cols = cols;
  if (type == KQuantType::kQ6_K) {
    out.x16.resize(static_cast<std::size_t>(x.tokens * (cols / 16)));
    for (std::int64_t t = 0; t < x.tokens; ++t) {
      const std::int8_t* xt = x.token(t);
      std::int16_t* s = out.x16.data() + t * (cols / 16);
      for (std::int64_t j = 0; j < cols / 16; ++j) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += xt[j * 16 + i];
        s[j] = static_cast<std::int16_t>(sum);  // |sum| <= 16 * 128
      }
    }
    if (isa == Isa::kAvx512) {
      out.lanes_per_token = cols / 64 * 16;
      out.lanes.assign(static_cast<std::size_t>(x.tokens * out.lanes_per_token), 0);
      for (std::int64_t t = 0; t < x.tokens; ++t) {
        const std::int16_t* s = out.sums16(t);
        std::int32_t* l = out.lanes.data() + t * out.lanes_per_token;
        for (std::int64_t j = 0; j < cols / 16; ++j) l[j / 4 * 16 + j % 4 * 4] = -32 * s[j];
      }
    }
    return;
  }
  out.x32.resize(static_cast<std::size_t>(x.tokens * (cols / 32)));
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    const std::int8_t* xt = x.token(t);
    std::int32_t* s = out.x32.data() + t * (cols / 32);
    for (std::int64_t j = 0; j < cols / 32; ++j) {
      std::int32_t sum = 0;
      for (int i = 0; i < 32; ++i) sum += xt[j * 32 + i];
      s[j] = sum;
    }
  }
  if (kquant_block_weights(type) != 32 || isa == Isa::kScalar) return;
  const std::int64_t groups = cols / 128;
  out.xr.resize(static_cast<std::size_t>(x.tokens * groups * 128));
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    const std::int8_t* xt = x.token(t);
    std::int8_t* r = out.xr.data() + t * groups * 128;
    for (std::int64_t g = 0; g < groups; ++g) {
      for (int k = 0; k < 4; ++k) {
        std::memcpy(r + g * 128 + 16 * k, xt + g * 128 + 32 * k, 16);
        std::memcpy(r + g * 128 + 64 + 16 * k, xt + g * 128 + 32 * k + 16, 16);
      }
    }
  }
  const bool with_min = type == KQuantType::kQ4_1 || type == KQuantType::kQ5_1;
  if (with_min && isa != Isa::kAvx512) return;
  const int offset = with_min ? 1 : type == KQuantType::kQ4_0 ? -8 : -16;
  out.lanes_per_token = cols / 32 * 4;
  out.lanes.assign(static_cast<std::size_t>(x.tokens * out.lanes_per_token), 0);
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    const std::int32_t* s = out.sums32(t);
    std::int32_t* l = out.lanes.data() + t * out.lanes_per_token;
    for (std::int64_t j = 0; j < cols / 32; ++j) l[4 * j] = offset * s[j];
  }
}

void kquant_matmul(const KQuantMatrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool,
                   float* y, std::size_t ldy) {
  if (x.cols != w.cols) {
    fail("activations have {} features but the {} matrix takes {}", x.cols, kquant_name(w.type),
         w.cols);
  }
  thread_local KQuantSums sums;
  kquant_sums(w.type, x, w.cols, isa, sums);
  const KQuantSums* s = &sums;  // (the workers get the caller's thread_local by pointer)
  const KQuantFn fn = isa == Isa::kAvx512 ? kquant_avx512(w.type)
                      : isa == Isa::kAvx2 ? kquant_avx2(w.type)
                                          : kquant_scalar(w.type);
  // Rows in tiles that stay in the L2 cache while every token reads them: the matrix streams from
  // memory once per call, not once per token.
  constexpr std::int64_t kTileBytes = 128 << 10;
  const std::int64_t tile = std::max<std::int64_t>(1, kTileBytes / w.row_bytes);
  pool.parallel_for(w.rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r0 = begin; r0 < end; r0 += tile) {
      fn(w, x, *s, 0, x.tokens, r0, std::min(end, r0 + tile), y, ldy);
    }
  });
}

}  // namespace nanochat::kernels
