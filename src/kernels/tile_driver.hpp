// Internal to src/kernels: the loop over tiles and token blocks that every ISA's micro-kernel
// plugs into. Included by each ISA translation unit, so everything here has internal linkage —
// each copy is compiled with its own TU's ISA flags, and no AVX-512 instantiation may ever be
// picked by the linker for the scalar path.
//
// A micro-kernel is a class with
//   template <int R, int NB> static void run(const std::uint8_t* tile, std::int64_t chunks,
//       const std::int8_t* const (&x)[NB], const std::int32_t (&sums)[NB],
//       std::int32_t (&out)[R][NB]);
// computing out[r][b] = sum_k W[r, k] * x[b][k] over `chunks` chunks of one tile, or instead
//   template <int R, int NB> static void run_into(..., std::int32_t* y, std::size_t ldy,
//       int rows), storing the same sums at y[b * ldy + r] for r < rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "nanochat/kernels/packed.hpp"
#include "nanochat/kernels/registry.hpp"
#include "static_for.hpp"

namespace nanochat::kernels {
namespace {

// One pass of the micro-kernel over a tile for NB tokens, sums stored at yb[i * ldy + r].
template <class Micro, int R, int NB>
inline __attribute__((always_inline)) void tile_pass(const std::uint8_t* tile, std::int64_t chunks,
                                                     const std::int8_t* const (&xs)[NB],
                                                     const std::int32_t (&sums)[NB],
                                                     std::int32_t* yb, std::size_t ldy,
                                                     int rows_here) {
  if constexpr (requires { Micro::template run_into<R, NB>; }) {
    // Stores straight into y: a wide copy out of a just-written out[][] stalls on store
    // forwarding once per tile, which short rows cannot hide.
    Micro::template run_into<R, NB>(tile, chunks, xs, sums, yb, ldy, rows_here);
  } else {
    std::int32_t out[R][NB];
    Micro::template run<R, NB>(tile, chunks, xs, sums, out);
    for (int r = 0; r < rows_here; ++r) {
      for (int i = 0; i < NB; ++i) yb[static_cast<std::size_t>(i) * ldy + r] = out[r][i];
    }
  }
}

// Every token of `x` against one tile (`chunks` chunks, rows row0 .. row0 + rows_here), NB tokens
// per pass and the tail one at a time. `tile` may be the matrix's own or a converted copy.
template <class Micro, int R, int NB>
void tile_tokens(const std::uint8_t* tile, std::int64_t chunks, const PackedActivations& x,
                 std::int64_t row0, int rows_here, std::int32_t* y, std::size_t ldy) {
  std::int64_t b = 0;
  for (; b + NB <= x.tokens; b += NB) {
    const std::int8_t* xs[NB];
    std::int32_t sums[NB];
    for (int i = 0; i < NB; ++i) {
      xs[i] = x.token(b + i);
      sums[i] = x.sums[static_cast<std::size_t>(b + i)];
    }
    tile_pass<Micro, R, NB>(tile, chunks, xs, sums, y + static_cast<std::size_t>(b) * ldy + row0,
                            ldy, rows_here);
  }
  for (; b < x.tokens; ++b) {  // token tail, one at a time
    const std::int8_t* xs[1] = {x.token(b)};
    const std::int32_t sums[1] = {x.sums[static_cast<std::size_t>(b)]};
    tile_pass<Micro, R, 1>(tile, chunks, xs, sums, y + static_cast<std::size_t>(b) * ldy + row0,
                           ldy, rows_here);
  }
}

template <class Micro, int R, int NB>
void gemm_tiles(const PackedMatrix& w, const PackedActivations& x, std::int64_t tile_begin,
                std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  for (std::int64_t t = tile_begin; t < tile_end; ++t) {
    const std::int64_t row0 = t * R;
    const int rows_here = static_cast<int>(std::min<std::int64_t>(R, w.rows - row0));
    tile_tokens<Micro, R, NB>(w.tile(t), w.chunks, x, row0, rows_here, y, ldy);
  }
}

template <class Micro, int R>
void gemm_rows(const PackedMatrix& w, const PackedActivations& x, int token_block,
               std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y, std::size_t ldy) {
  switch (token_block) {
    case 1:
      return gemm_tiles<Micro, R, 1>(w, x, tile_begin, tile_end, y, ldy);
    case 2:
      return gemm_tiles<Micro, R, 2>(w, x, tile_begin, tile_end, y, ldy);
    case 4:
      return gemm_tiles<Micro, R, 4>(w, x, tile_begin, tile_end, y, ldy);
    default:
      tile_driver_error("no kernel processes this many tokens per pass (1, 2 or 4)", token_block);
  }
}

template <class Micro>
void gemm_dispatch(const PackedMatrix& w, const PackedActivations& x, int token_block,
                   std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                   std::size_t ldy) {
  if (x.cols != w.cols) {
    tile_driver_error("the activations' width differs from the matrix's", x.cols, w.cols);
  }
  switch (w.tile_rows) {
    case 1:
      return gemm_rows<Micro, 1>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 2:
      return gemm_rows<Micro, 2>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 4:
      return gemm_rows<Micro, 4>(w, x, token_block, tile_begin, tile_end, y, ldy);
    case 8:
      return gemm_rows<Micro, 8>(w, x, token_block, tile_begin, tile_end, y, ldy);
    default:
      tile_driver_error("no kernel handles tiles of this many rows", w.tile_rows);
  }
}

}  // namespace
}  // namespace nanochat::kernels
