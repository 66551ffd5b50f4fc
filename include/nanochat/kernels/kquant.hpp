// Output heads kept in llama.cpp's block types times int8 activations, read in the file's own
// block layout instead of being requantized to Q8_0 (8.5 bits per weight) at load: the K-quants
// llama-quantize writes by default (Q6_K 6.56 and Q4_K 4.5 bits per weight) and their relatives
// Q5_K (5.5), Q4_0 (4.5), Q4_1 (5), Q5_0 (5.5) and Q5_1 (6).
//
// Q6_K (210 bytes per 256 weights): w = d * sc[j] * (q - 32), q in [0, 63], sc[j] int8 per 16
// weights. Q4_K (144 bytes per 256) and Q5_K (176): w = d * sc[j] * q - dmin * m[j], q in
// [0, 15] or [0, 31], sc[j] and m[j] 6-bit per 32 weights. Q4_0 (18 bytes per 32):
// w = d * (q - 8); Q5_0 (22): w = d * (q - 16); Q4_1 (20) and Q5_1 (24): w = d * q + m. With
// int8 activations x (one fp32 scale per token) each block's dot product is exact in int32:
//   Q6_K:       d * A,             A = sum_j sc[j] * (sum_{i in j} q_i x_i - 32 * sum_{i in j} x_i)
//   Q4_K, Q5_K: d * A - dmin * B,  A = sum_j sc[j] * sum_{i in j} q_i x_i,
//                                  B = sum_j m[j] * sum_{i in j} x_i
//   Q4_0, Q5_0: d * A,             A = sum_i q_i x_i - (8 or 16) * sum_i x_i
//   Q4_1, Q5_1: d * A + m * B,     A = sum_i q_i x_i,  B = sum_i x_i
// and the blocks are summed in fp32 (so ISAs agree to rounding, not bit for bit; each ISA gives
// a token the same bits whatever tokens are computed beside it).
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

// (The name stays from the first two types; the 32-weight block types share the machinery.)
enum class KQuantType { kQ4_K, kQ6_K, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ5_K };

struct KQuantMatrix {
  KQuantType type = KQuantType::kQ6_K;
  std::int64_t rows = 0;
  std::int64_t cols = 0;             // a multiple of the block's weights (32 or 256)
  std::int64_t row_bytes = 0;        // cols / kquant_block_weights blocks of kquant_block_bytes
  AlignedBuffer<std::uint8_t> data;  // [rows][row_bytes], the file's blocks
};

// Every type with head kernels, in one table's order.
inline constexpr KQuantType kKQuantTypes[] = {
    KQuantType::kQ4_0, KQuantType::kQ4_1, KQuantType::kQ5_0, KQuantType::kQ5_1,
    KQuantType::kQ4_K, KQuantType::kQ5_K, KQuantType::kQ6_K};

// The ggml type id a KQuantType stands for (2, 3, 6, 7, 12, 13, 14), and the one for a ggml type
// id if nanochat has head kernels for it.
std::uint32_t kquant_ggml_type(KQuantType type);
bool kquant_from_ggml(std::uint32_t ggml_type, KQuantType& type);
// ggml's name ("Q4_0"), weights per block (32 or 256) and bytes per block.
const char* kquant_name(KQuantType type);
std::int64_t kquant_block_weights(KQuantType type);
std::int64_t kquant_block_bytes(KQuantType type);

// Copies a [rows][cols] tensor's blocks (rows split over `pool`); `rows_read(begin, end)`, when
// given, is told from each thread that rows [begin, end) have been read, at most `slab` at a
// time. Throws FormatError when cols is not a multiple of the block's weights, the byte count is
// wrong, or a block scale (d, or dmin / m) is infinite or NaN (naming the row).
KQuantMatrix pack_kquant(KQuantType type, std::span<const std::uint8_t> blocks, std::int64_t rows,
                         std::int64_t cols, ThreadPool& pool,
                         const std::function<void(std::int64_t, std::int64_t)>& rows_read = {},
                         std::int64_t slab = 1024);

// Per-token sums of the activations the kernels subtract (computed once per call):
// x16[t][cols/16] (int16, Q6_K), x32[t][cols/32] (int32, every other type), and for the SIMD
// kernels:
// - Q6_K on AVX-512: lanes[t][cols/64][16], -32 * the sum of each 16 values in lanes 0, 4, 8, 12;
// - the 32-weight types on AVX2 and AVX-512: the activations of each whole group of four blocks
//   (128 values) reordered as the four blocks' values 0-15, then their values 16-31
//   (xr[t][cols/128*128], matching a register of four blocks' low nibbles, then high ones), and
//   for Q4_0 and Q5_0 lanes[t][cols/32][4]: -8 or -16 * each block's sum in its first lane (for
//   Q4_1 and Q5_1 on AVX-512: the sum itself).
struct KQuantSums {
  std::int64_t tokens = 0, cols = 0;
  std::vector<std::int16_t> x16;
  std::vector<std::int32_t> x32;
  std::vector<std::int32_t> lanes;
  std::vector<std::int8_t> xr;
  std::int64_t lanes_per_token = 0;
  const std::int16_t* sums16(std::int64_t t) const { return x16.data() + t * (cols / 16); }
  const std::int32_t* sums32(std::int64_t t) const { return x32.data() + t * (cols / 32); }
  const std::int32_t* lanes_at(std::int64_t t) const { return lanes.data() + t * lanes_per_token; }
  const std::int8_t* reordered(std::int64_t t) const { return xr.data() + t * (cols / 128 * 128); }
};
void kquant_sums(KQuantType type, const PackedActivations& x, std::int64_t cols, Isa isa,
                 KQuantSums& out);

// y[b * ldy + m] (fp32) for every token of `x` (x.cols == w.cols), rows split over the pool.
void kquant_matmul(const KQuantMatrix& w, const PackedActivations& x, Isa isa, ThreadPool& pool,
                   float* y, std::size_t ldy);

// Per-ISA kernels: rows [row_begin, row_end) for tokens [b0, b1) into y[b * ldy + row].
using KQuantFn = void (*)(const KQuantMatrix& w, const PackedActivations& x, const KQuantSums& sums,
                          std::int64_t b0, std::int64_t b1, std::int64_t row_begin,
                          std::int64_t row_end, float* y, std::size_t ldy);
KQuantFn kquant_scalar(KQuantType type);
KQuantFn kquant_avx2(KQuantType type);
KQuantFn kquant_avx512(KQuantType type);

// Quantizes x (a multiple of the block's weights) into `out` (whole blocks): a plain
// round-to-nearest quantizer (scales from the largest magnitude, or the range for the types with
// a min), not llama.cpp's searched one — for models made up for tests and benchmarks.
void quantize_row_kquant(KQuantType type, std::span<const float> x, std::span<std::uint8_t> out);

// The 8 scales and 8 mins of a Q4_K or Q5_K block from its 12 packed bytes (6 bits each).
void q4_k_scales(const std::uint8_t* packed, std::uint8_t* scales, std::uint8_t* mins);

}  // namespace nanochat::kernels
