#include "nanochat/kernels/packed.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <optional>
#include <vector>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kTq2:
      return "tq2";
    case Layout::kStride64:
      return "stride64";
    case Layout::kBase3:
      return "base3";
  }
  return "?";
}

std::optional<Layout> parse_layout(std::string_view text) {
  for (Layout l : kLayouts) {
    if (text == layout_name(l)) return l;
  }
  return std::nullopt;
}

namespace {

constexpr std::uint8_t kAllZeroWeights = 0x55;  // four codes of 1
constexpr std::int64_t kBase3Weights = layout_unit_weights(Layout::kBase3);
constexpr std::uint8_t kBase3Zero = 121;  // five codes of 1: 81 + 27 + 9 + 3 + 1

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

// Row `row`'s base-3 bytes from its codes (c = q + 1, one byte each, m.chunks * 320 of them): byte
// p of unit u holds codes u*320 + p + 64*i, i = 0 .. 4, most significant first.
void store_base3_row(PackedMatrix& m, std::int64_t row, const std::uint8_t* codes) {
  for (std::int64_t u = 0; u < m.chunks; ++u) {
    const std::uint8_t* c = codes + u * kBase3Weights;
    std::uint8_t* dst = m.codes.data() + offset_of(m, row, u);
    for (int p = 0; p < 64; ++p) {
      dst[p] = static_cast<std::uint8_t>(c[p] * 81 + c[p + 64] * 27 + c[p + 128] * 9 +
                                         c[p + 192] * 3 + c[p + 256]);
    }
  }
}

}  // namespace

void repack_matrix(PackedMatrix& m, const RowSource& source) {
  m.row_scales.assign(static_cast<std::size_t>(m.rows), 1.0f);
  if (m.layout == Layout::kBase3) {
    std::memset(m.codes.data(), kBase3Zero, m.codes.bytes());
    std::vector<std::int8_t> trits(static_cast<std::size_t>(m.chunks * kBase3Weights), 0);
    std::vector<std::uint8_t> codes(trits.size());
    for (std::int64_t row = 0; row < m.rows; ++row) {
      source(row, std::span<std::int8_t>(trits.data(), static_cast<std::size_t>(m.cols)));
      for (std::size_t i = 0; i < trits.size(); ++i) {
        if (trits[i] < -1 || trits[i] > 1)
          fail("row {} holds {}, which is not a ternary weight", row, trits[i]);
        codes[i] = static_cast<std::uint8_t>(trits[i] + 1);
      }
      store_base3_row(m, row, codes.data());
    }
    return;
  }
  std::memset(m.codes.data(), kAllZeroWeights, m.codes.bytes());
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

namespace {

// A matrix's shape and layout for `isa`'s kernel at `tile_rows`, checked; no codes yet.
PackedMatrix packed_shape(std::int64_t rows, std::int64_t cols, Isa isa, int tile_rows,
                          std::optional<Layout> layout) {
  const KernelInfo& kernel = kernel_info(isa);
  if (std::find(kernel.tile_rows.begin(), kernel.tile_rows.end(), tile_rows) ==
      kernel.tile_rows.end()) {
    fail("the {} kernel has no tiling with {} rows per tile", kernel.name, tile_rows);
  }
  const Layout chosen = layout.value_or(kernel.layout);
  if (!kernel_has_layout(isa, chosen)) {
    fail("the {} kernel has no {} layout on this CPU", kernel.name, layout_name(chosen));
  }
  if (rows <= 0 || cols <= 0) fail("cannot pack a {}x{} matrix", rows, cols);
  PackedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.chunks = layout_units(chosen, cols);
  m.tile_rows = tile_rows;
  m.tiles = (rows + tile_rows - 1) / tile_rows;
  m.isa = isa;
  m.layout = chosen;
  return m;
}

}  // namespace

PackedMatrix pack_matrix(std::int64_t rows, std::int64_t cols, const RowSource& source, Isa isa,
                         int tile_rows, int numa_node, std::optional<Layout> layout) {
  PackedMatrix m = packed_shape(rows, cols, isa, tile_rows, layout);
  m.codes =
      AlignedBuffer<std::uint8_t>(static_cast<std::size_t>(m.tiles) * m.tile_bytes(), numa_node);
  repack_matrix(m, source);
  return m;
}

void trits_to_tq2_codes(std::span<const std::int8_t> trits, std::span<std::uint8_t> codes) {
  if (trits.size() > codes.size() * 4) {
    fail("{} weights do not fit in {} bytes of codes", trits.size(), codes.size());
  }
  for (std::size_t c = 0; c * kChunk < trits.size(); ++c) {
    const std::size_t n = std::min<std::size_t>(kChunk, trits.size() - c * kChunk);
    std::uint8_t* bytes = codes.data() + c * kChunkBytes;
    for (std::size_t i = 0; i < n; ++i) {
      const std::int8_t w = trits[c * kChunk + i];
      if (w < -1 || w > 1) {
        fail("row weight {} is {}, which is not a ternary weight", c * kChunk + i, w);
      }
      const Slot s = slot_of(Layout::kTq2, static_cast<int>(i));
      bytes[s.byte] = static_cast<std::uint8_t>((bytes[s.byte] & ~(3u << s.shift)) |
                                                static_cast<unsigned>(w + 1) << s.shift);
    }
  }
}

namespace {

// One chunk's 64 bytes of kTq2 codes in `layout`. kTq2 byte h*32+m holds weights h*128 + l*32 + m
// in field l; kStride64 byte p holds weights j*64 + p in field j. So kStride64 byte p < 32 takes
// fields 0 and 2 of kTq2 bytes p (A) and p + 32 (B), and byte p + 32 their fields 1 and 3: bit
// moves within bytes, in byte order, which the compiler vectorizes at any baseline.
void store_chunk(Layout layout, const std::uint8_t* src, std::uint8_t* dst) {
  if (layout == Layout::kTq2) {
    std::memcpy(dst, src, kChunkBytes);
    return;
  }
  for (int p = 0; p < 32; ++p) {
    const unsigned a = src[p], b = src[p + 32];
    dst[p] = static_cast<std::uint8_t>((a & 0x03u) | (a & 0x30u) >> 2 | (b & 0x03u) << 4 |
                                       (b & 0x30u) << 2);
    dst[p + 32] = static_cast<std::uint8_t>((a & 0x0cu) >> 2 | (a & 0xc0u) >> 4 | (b & 0x0cu) << 2 |
                                            (b & 0xc0u));
  }
}

// The codes of `chunks` kTq2 chunks one per byte, in weight order: byte h*32+m, field l holds
// weight h*128 + l*32 + m.
void tq2_to_codes(const std::uint8_t* src, std::int64_t chunks, std::uint8_t* codes) {
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::uint8_t* in = src + c * kChunkBytes;
    std::uint8_t* out = codes + c * kChunk;
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 4; ++l) {
        for (int m = 0; m < 32; ++m) {
          out[h * 128 + l * 32 + m] = static_cast<std::uint8_t>((in[h * 32 + m] >> (2 * l)) & 3);
        }
      }
    }
  }
}

}  // namespace

PackedMatrix pack_matrix_codes(std::int64_t rows, std::int64_t cols, const CodeSource& source,
                               Isa isa, int tile_rows, ThreadPool& pool, int numa_node,
                               std::optional<Layout> layout) {
  PackedMatrix m = packed_shape(rows, cols, isa, tile_rows, layout);
  m.codes = AlignedBuffer<std::uint8_t>::uninitialized(
      static_cast<std::size_t>(m.tiles) * m.tile_bytes(), numa_node);
  m.row_scales.assign(static_cast<std::size_t>(rows), 1.0f);
  // Each thread's first error and its row; threads take ascending ranges of tiles and stop at
  // their first error, so the lowest row with an error is the first thread's that has one.
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(pool.size()));
  // The source's kTq2 row: 2-bit chunks of 256 weights, as many as the row's weights need.
  const std::int64_t tq2_chunks = (cols + kChunk - 1) / kChunk;
  const auto row_bytes = static_cast<std::size_t>(tq2_chunks * kChunkBytes);
  pool.run([&](int thread) {
    const std::int64_t begin = m.tiles * thread / pool.size();
    const std::int64_t end = m.tiles * (thread + 1) / pool.size();
    std::vector<std::uint8_t> codes(row_bytes);
    // kBase3: the row's codes one per byte (1 past the row).
    std::vector<std::uint8_t> unpacked;
    if (m.layout == Layout::kBase3) {
      unpacked.assign(
          static_cast<std::size_t>(std::max(m.chunks * kBase3Weights, tq2_chunks * kChunk)), 1);
    }
    try {
      for (std::int64_t t = begin; t < end; ++t) {
        for (int r = 0; r < tile_rows; ++r) {
          const std::int64_t row = t * tile_rows + r;
          std::memset(codes.data(), kAllZeroWeights, row_bytes);
          if (row < rows) source(row, codes);
          if (m.layout == Layout::kBase3) {
            tq2_to_codes(codes.data(), tq2_chunks, unpacked.data());
            store_base3_row(m, row, unpacked.data());
            continue;
          }
          for (std::int64_t c = 0; c < m.chunks; ++c) {
            store_chunk(m.layout, codes.data() + c * kChunkBytes,
                        m.codes.data() + offset_of(m, row, c));
          }
        }
      }
    } catch (...) {
      errors[static_cast<std::size_t>(thread)] = std::current_exception();
    }
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return m;
}

int packed_trit(const PackedMatrix& m, std::int64_t row, std::int64_t col) {
  if (m.layout == Layout::kBase3) {
    const std::int64_t in_unit = col % kBase3Weights;
    int q =
        m.codes[offset_of(m, row, col / kBase3Weights) + static_cast<std::size_t>(in_unit % 64)];
    for (std::int64_t digit = in_unit / 64; digit < 4; ++digit) q /= 3;
    return q % 3 - 1;
  }
  const Slot s = slot_of(m.layout, static_cast<int>(col % kChunk));
  const std::uint8_t byte =
      m.codes[offset_of(m, row, col / kChunk) + static_cast<std::size_t>(s.byte)];
  return ((byte >> s.shift) & 3) - 1;
}

void reshape_activations(PackedActivations& out, std::int64_t tokens, std::int64_t cols) {
  const std::int64_t padded = (cols + kChunk - 1) / kChunk * kChunk;
  const auto need = static_cast<std::size_t>(tokens * padded);
  if (out.q.size() < need) out.q = AlignedBuffer<std::int8_t>(need);
  out.tokens = tokens;
  out.cols = cols;
  out.cols_padded = padded;
  out.sums.assign(static_cast<std::size_t>(tokens), 0);
  out.scales.assign(static_cast<std::size_t>(tokens), 1.0f);
}

void finish_activation_rows(PackedActivations& out, std::int64_t begin, std::int64_t end) {
  for (std::int64_t t = begin; t < end; ++t) {
    std::int8_t* row = out.q.data() + t * out.cols_padded;
    std::memset(row + out.cols, 0, static_cast<std::size_t>(out.cols_padded - out.cols));
    std::int32_t sum = 0;
    for (std::int64_t i = 0; i < out.cols; ++i) sum += row[i];
    out.sums[static_cast<std::size_t>(t)] = sum;
  }
}

void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out) {
  reshape_activations(out, tokens, cols);
  ternary::quantize_activations(x, tokens, cols, out.q.data(),
                                static_cast<std::size_t>(out.cols_padded), out.scales.data());
  finish_activation_rows(out, 0, out.tokens);
}

void pack_activations(const float* x, std::int64_t tokens, std::int64_t cols,
                      PackedActivations& out, ThreadPool& pool) {
  reshape_activations(out, tokens, cols);
  pool.parallel_for(tokens, [&](std::int64_t begin, std::int64_t end) {
    ternary::quantize_activations(
        x + begin * cols, end - begin, cols, out.q.data() + begin * out.cols_padded,
        static_cast<std::size_t>(out.cols_padded), out.scales.data() + begin);
    finish_activation_rows(out, begin, end);
  });
}

void pack_activations_i8(const std::int8_t* x, std::int64_t tokens, std::int64_t cols,
                         PackedActivations& out) {
  reshape_activations(out, tokens, cols);
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::memcpy(out.q.data() + t * out.cols_padded, x + t * cols, static_cast<std::size_t>(cols));
  }
  finish_activation_rows(out, 0, out.tokens);
}

}  // namespace nanochat::kernels
