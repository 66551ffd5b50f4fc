#include "nanochat/kernels/packed.hpp"

#include <algorithm>
#include <cstring>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {
namespace {

constexpr std::uint8_t kAllZeroWeights = 0x55;  // four codes of 1

// Position of weight i (0..255) of a chunk: byte index and bit shift.
struct Slot {
  int byte;
  int shift;
};

Slot slot_of(Layout layout, int i) {
  if (layout == Layout::kTq2) {
    const int h = i / 128, l = (i % 128) / 32, m = i % 32;
    return {h * 32 + m, 2 * l};
  }
  return {i % 64, 2 * (i / 64)};
}

std::size_t offset_of(const PackedMatrix& m, std::int64_t row, std::int64_t chunk) {
  const std::int64_t t = row / m.tile_rows, r = row % m.tile_rows;
  return static_cast<std::size_t>(((t * m.chunks + chunk) * m.tile_rows + r) * kChunkBytes);
}

}  // namespace

void repack_matrix(PackedMatrix& m, const RowSource& source) {
  std::memset(m.codes.data(), kAllZeroWeights, m.codes.bytes());
  m.row_scales.assign(static_cast<std::size_t>(m.rows), 1.0f);
  Slot slots[kChunk];
  for (int i = 0; i < kChunk; ++i) slots[i] = slot_of(m.layout, i);
  std::vector<std::int8_t> trits(static_cast<std::size_t>(m.chunks * kChunk), 0);
  for (std::int64_t row = 0; row < m.rows; ++row) {
    source(row, std::span<std::int8_t>(trits.data(), static_cast<std::size_t>(m.cols)));
    for (std::int64_t c = 0; c < m.chunks; ++c) {
      std::uint8_t bytes[kChunkBytes] = {};
      const std::int8_t* w = trits.data() + c * kChunk;
      for (int i = 0; i < kChunk; ++i) {
        if (w[i] < -1 || w[i] > 1)
          fail("row {} holds {}, which is not a ternary weight", row, w[i]);
        bytes[slots[i].byte] |= static_cast<std::uint8_t>((w[i] + 1) << slots[i].shift);
      }
      std::memcpy(m.codes.data() + offset_of(m, row, c), bytes, kChunkBytes);
    }
  }
}

PackedMatrix pack_matrix(std::int64_t rows, std::int64_t cols, const RowSource& source, Isa isa,
                         int tile_rows, int numa_node) {
  const KernelInfo& kernel = kernel_info(isa);
  if (std::find(kernel.tile_rows.begin(), kernel.tile_rows.end(), tile_rows) ==
      kernel.tile_rows.end()) {
    fail("the {} kernel has no tiling with {} rows per tile", kernel.name, tile_rows);
  }
  if (rows <= 0 || cols <= 0) fail("cannot pack a {}x{} matrix", rows, cols);
  PackedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.chunks = (cols + kChunk - 1) / kChunk;
  m.tile_rows = tile_rows;
  m.tiles = (rows + tile_rows - 1) / tile_rows;
  m.isa = isa;
  m.layout = kernel.layout;
  m.codes =
      AlignedBuffer<std::uint8_t>(static_cast<std::size_t>(m.tiles) * m.tile_bytes(), numa_node);
  repack_matrix(m, source);
  return m;
}

int packed_trit(const PackedMatrix& m, std::int64_t row, std::int64_t col) {
  const Slot s = slot_of(m.layout, static_cast<int>(col % kChunk));
  const std::uint8_t byte =
      m.codes[offset_of(m, row, col / kChunk) + static_cast<std::size_t>(s.byte)];
  return ((byte >> s.shift) & 3) - 1;
}

namespace {

void reshape(PackedActivations& out, std::int64_t tokens, std::int64_t cols) {
  const std::int64_t padded = (cols + kChunk - 1) / kChunk * kChunk;
  const auto need = static_cast<std::size_t>(tokens * padded);
  if (out.q.size() < need) out.q = AlignedBuffer<std::int8_t>(need);
  out.tokens = tokens;
  out.cols = cols;
  out.cols_padded = padded;
  out.sums.assign(static_cast<std::size_t>(tokens), 0);
  out.scales.assign(static_cast<std::size_t>(tokens), 1.0f);
}

void finish_rows(PackedActivations& out, std::int64_t begin, std::int64_t end) {
  for (std::int64_t t = begin; t < end; ++t) {
    std::int8_t* row = out.q.data() + t * out.cols_padded;
    std::memset(row + out.cols, 0, static_cast<std::size_t>(out.cols_padded - out.cols));
    std::int32_t sum = 0;
    for (std::int64_t i = 0; i < out.cols; ++i) sum += row[i];
    out.sums[static_cast<std::size_t>(t)] = sum;
  }
}

void finish(PackedActivations& out) { finish_rows(out, 0, out.tokens); }

}  // namespace

void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out) {
  reshape(out, tokens, cols);
  ternary::quantize_activations(x, tokens, cols, out.q.data(),
                                static_cast<std::size_t>(out.cols_padded), out.scales.data());
  finish(out);
}

void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out, ThreadPool& pool) {
  reshape(out, tokens, cols);
  pool.parallel_for(tokens, [&](std::int64_t begin, std::int64_t end) {
    ternary::quantize_activations(
        x + begin * cols, end - begin, cols, out.q.data() + begin * out.cols_padded,
        static_cast<std::size_t>(out.cols_padded), out.scales.data() + begin);
    finish_rows(out, begin, end);
  });
}

void pack_activations_i8(const std::int8_t* x, std::int64_t tokens, std::int64_t cols,
                         PackedActivations& out) {
  reshape(out, tokens, cols);
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::memcpy(out.q.data() + t * out.cols_padded, x + t * cols, static_cast<std::size_t>(cols));
  }
  finish(out);
}

}  // namespace nanochat::kernels
