// Runtime layouts of ternary weights and int8 activations, as the kernels want them. The on-disk
// formats (TQ1_0 / TQ2_0 / I2_S) are repacked into these once, at load.
//
// Weights are stored as 2-bit codes c = q + 1 in {0, 1, 2}. Kernels multiply codes (unsigned)
// with activations (signed) — exactly what VNNI's vpdpbusd and AVX2's vpmaddubsw take — and
// subtract the per-token activation sum:  sum(q * x) = sum(c * x) - sum(x).
//
// Rows are grouped in tiles of `tile_rows` rows; within a tile the rows are interleaved per
// chunk of 256 weights, so a tile is one contiguous stream that hardware prefetchers follow:
//   byte (tile t, chunk c, row r, byte p) at ((t * chunks + c) * tile_rows + r) * 64 + p.
// The 64 bytes of one (row, chunk) hold 256 codes in one of two orders:
//   kTq2      : byte h*32+m, bits 2l, holds weight h*128 + l*32 + m   (ggml's TQ2_0 qs order;
//               suits 32-byte registers)
//   kStride64 : byte p, bits 2j, holds weight j*64 + p                 (suits 64-byte registers)
// Padding (rows past `rows`, columns past `cols`) holds code 1, i.e. weight 0, and activation
// padding holds 0, so tails cost nothing and change nothing.
//
// kBase3 packs five weights per byte (1.6 bits per weight, against the 2-bit layouts' 2): a
// 64-byte unit holds 320 weights, byte p the weights p, p + 64, p + 128, p + 192 and p + 256 of
// its unit as the base-3 number c0*81 + c1*27 + c2*9 + c3*3 + c4 of their codes. Units take the
// place of chunks in the tile order above; a row has ceil(cols / 320) of them, and in the last
// one the digits past the row's last 64-weight run are code 1 (the activations stop there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/util/aligned.hpp"

namespace nanochat::kernels {

inline constexpr std::int64_t kChunk = 256;      // weights per chunk
inline constexpr std::int64_t kChunkBytes = 64;  // bytes per (row, chunk)

enum class Layout { kTq2, kStride64, kBase3 };
inline constexpr Layout kLayouts[] = {Layout::kTq2, Layout::kStride64, Layout::kBase3};

// "tq2", "stride64", "base3"; parse_layout gives nullopt for anything else.
const char* layout_name(Layout layout);
std::optional<Layout> parse_layout(std::string_view text);
// Weights per 64-byte unit of a row: 256 in the 2-bit layouts, 320 in kBase3.
constexpr std::int64_t layout_unit_weights(Layout layout) {
  return layout == Layout::kBase3 ? 320 : kChunk;
}
// 64-byte units per row of `cols` weights.
constexpr std::int64_t layout_units(Layout layout, std::int64_t cols) {
  return (cols + layout_unit_weights(layout) - 1) / layout_unit_weights(layout);
}

struct PackedMatrix {
  std::int64_t rows = 0;    // logical output features (M)
  std::int64_t cols = 0;    // logical input features (K)
  std::int64_t chunks = 0;  // 64-byte units per row: layout_units(layout, cols)
  std::int64_t tiles = 0;   // ceil(rows / tile_rows)
  int tile_rows = 1;
  Isa isa = Isa::kScalar;  // the kernel this layout was made for
  Layout layout = Layout::kTq2;
  // How single-token passes unpack the codes, where the kernel has several ways (KernelInfo::
  // variants; 0 = the kernel's plain way). Set from the autotuner's single-token plan.
  int variant = 0;
  AlignedBuffer<std::uint8_t> codes;  // tiles * chunks * tile_rows * 64 bytes
  std::vector<float> row_scales;      // per output row: the weight scale s

  std::size_t tile_bytes() const {
    return static_cast<std::size_t>(chunks * tile_rows * kChunkBytes);
  }
  const std::uint8_t* tile(std::int64_t t) const {
    return codes.data() + static_cast<std::size_t>(t) * tile_bytes();
  }
  // Bytes a full pass over the weights streams (what one GEMV call must read).
  std::size_t weight_bytes() const { return codes.bytes(); }
};

class ThreadPool;

// Fills `trits` (cols values in {-1,0,1}) with row `row` of the source matrix.
using RowSource = std::function<void(std::int64_t row, std::span<std::int8_t> trits)>;

// Repacks a ternary matrix for `isa`'s kernel with `tile_rows` rows per tile, in `layout` (one of
// kernel_layouts(isa); by default the kernel's first). Row scales start at 1; callers set them.
// Throws Error when tile_rows or the layout is not one the kernel supports. `numa_node` < 0: no
// placement.
PackedMatrix pack_matrix(std::int64_t rows, std::int64_t cols, const RowSource& source, Isa isa,
                         int tile_rows, int numa_node = -1,
                         std::optional<Layout> layout = std::nullopt);

// Fills `codes` (chunks * 64 bytes) with row `row`'s 2-bit codes c = q + 1 in the kTq2 order
// (ggml's TQ2_0 qs bytes, chunk after chunk). On entry every byte is 0x55 (four weights of 0), so a
// source may leave the columns past `cols` alone. Called concurrently for different rows.
using CodeSource = std::function<void(std::int64_t row, std::span<std::uint8_t> codes)>;

// pack_matrix from code rows, the tiles split over `pool`: a TQ2_0 row is copied as it is (kTq2)
// or has its bits regrouped (kStride64), 64 bytes at a time, with no per-weight work, or has its
// codes combined five to a byte (kBase3, byte-wide loops the compiler vectorizes); each thread
// first-touches the tiles it writes. The codes are those pack_matrix would write for the
// same weights, bit for bit, at any thread count. When sources throw for several rows, the
// exception of the lowest row is rethrown (the one a single thread would have met first).
PackedMatrix pack_matrix_codes(std::int64_t rows, std::int64_t cols, const CodeSource& source,
                               Isa isa, int tile_rows, ThreadPool& pool, int numa_node = -1,
                               std::optional<Layout> layout = std::nullopt);

// Codes of `trits` (cols values in {-1,0,1}) in the kTq2 order into `codes` (a whole number of
// 64-byte chunks; weights past trits.size() are left as they are). Throws Error on a value
// outside {-1,0,1}.
void trits_to_tq2_codes(std::span<const std::int8_t> trits, std::span<std::uint8_t> codes);

// Refills an already packed matrix with new trits (same shape and layout; row scales reset to 1)
// without reallocating — the trainer re-quantizes every matrix every step.
void repack_matrix(PackedMatrix& m, const RowSource& source);

// Reads back the trit at (row, col) — for tests and debugging, not for speed.
int packed_trit(const PackedMatrix& m, std::int64_t row, std::int64_t col);

// int8 activations of a batch of tokens: [tokens][cols_padded], zero padded, 64-byte aligned rows,
// with each token's sum for the code offset and its dequantization scale.
struct PackedActivations {
  std::int64_t tokens = 0;
  std::int64_t cols = 0;
  std::int64_t cols_padded = 0;  // multiple of 256
  AlignedBuffer<std::int8_t> q;
  std::vector<std::int32_t> sums;
  std::vector<float> scales;  // x ~= q * scales[t]

  const std::int8_t* token(std::int64_t t) const {
    return q.data() + static_cast<std::size_t>(t * cols_padded);
  }
};

// Quantizes fp32 activations [tokens][cols] (absmax per token, DESIGN.md) into `out`, reusing its
// storage when the shape allows.
void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out);
// The same with the tokens split over `pool` (identical results).
void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out, ThreadPool& pool);
// pack_activations in two halves, for a caller that quantizes the rows itself (the same codes
// and scales as ternary::quantize_activations): reshape_activations sizes `out` for tokens x cols
// (storage reused), and once rows [begin, end) of q and scales are written,
// finish_activation_rows zeroes their padding and sets their sums.
void reshape_activations(PackedActivations& out, std::int64_t tokens, std::int64_t cols);
void finish_activation_rows(PackedActivations& out, std::int64_t begin, std::int64_t end);
// Takes already-quantized int8 activations [tokens][cols] (scales set to 1).
void pack_activations_i8(const std::int8_t* x, std::int64_t tokens, std::int64_t cols,
                         PackedActivations& out);

}  // namespace nanochat::kernels
