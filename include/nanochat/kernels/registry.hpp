// The table of kernels — one entry per ISA translation unit — that dispatch, the autotuner,
// benchmarks and tests all iterate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/packed.hpp"

namespace nanochat::kernels {

// Computes y[b * ldy + row] = sum_k W[row, k] * x_q[b, k] exactly in int32, for every token b and
// every row of tiles [tile_begin, tile_end), processing `token_block` tokens per pass over a
// tile. Reads only; safe to call concurrently on disjoint tile ranges.
using GemmFn = void (*)(const PackedMatrix& w, const PackedActivations& x, int token_block,
                        std::int64_t tile_begin, std::int64_t tile_end, std::int32_t* y,
                        std::size_t ldy);

// Reads `bytes` bytes (a multiple of 256, 64-byte aligned) with the ISA's widest loads and
// returns a value that depends on all of them — the memory-bandwidth probe.
using ReadProbeFn = std::uint64_t (*)(const std::uint8_t* data, std::size_t bytes);

struct KernelInfo {
  Isa isa;
  const char* name;  // e.g. "avx512-vnni"
  Layout layout;     // the default layout (kernel_layouts lists every one it runs here)
  std::span<const int> tile_rows;     // rows per tile this kernel is compiled for
  std::span<const int> token_blocks;  // tokens per pass it is compiled for
  GemmFn gemm;
  ReadProbeFn read_probe;
  // Ways of unpacking codes in single-token passes this CPU can run (PackedMatrix::variant is one
  // of 0 .. variants() - 1) and their names for reports. Without measurements (--autotune off)
  // single tokens use the last: the one for weights streamed from memory, as in decode.
  int (*variants)();
  const char* (*variant_name)(int variant);
};

// For kernels with a single way.
// The tile driver's internal errors (InternalError), raised from baseline code: an ISA unit must
// not instantiate fail<> or Error's members itself, since the linker could pick those weak copies,
// compiled with the unit's flags, for baseline callers (tests/cli/isa_units_check.sh checks).
[[noreturn]] void tile_driver_error(const char* what, std::int64_t a, std::int64_t b = -1);

// A 64-byte aligned buffer of at least `bytes` bytes owned by the calling thread, valid until its
// next call on that thread (kernels' per-tile scratch; allocated here, in baseline code, so no
// ISA unit instantiates a container).
std::uint8_t* thread_scratch(std::size_t bytes);

int one_variant();
const char* plain_variant(int variant);

// The layouts `isa`'s kernel can multiply on this CPU, its default first: the AVX-512 kernel adds
// kBase3 where the CPU has AVX512-VBMI (vpermi2b decodes five weights a byte) and
// NANOCHAT_NO_VBMI is unset or "0", so tests cover the 2-bit layout on such a CPU too.
std::span<const Layout> kernel_layouts(Isa isa);
bool kernel_has_layout(Isa isa, Layout layout);
bool avx512_uses_vbmi();

// NANOCHAT_LAYOUT=tq2|stride64|base3 forces the weight layout (to compare them, or to test one);
// nullopt when unset. Throws UsageError naming the variable when the value is unknown or no
// kernel this run may use (`isa` when forced, else any this CPU has) multiplies it.
std::optional<Layout> layout_override(std::optional<Isa> isa);

// Every kernel compiled into the library (whether or not this CPU can run it).
std::span<const KernelInfo> kernel_registry();
const KernelInfo& kernel_info(Isa isa);

// Whether the AVX-512 kernel may unpack weights with GFNI's gf2p8affineqb (CPUs that have it; its
// variant 1, which the autotuner picks per matrix where it is faster) or only with shifts and
// masks. NANOCHAT_NO_GFNI=1 (any value but "" or "0") forces the latter, so tests cover both on a
// GFNI CPU.
bool avx512_uses_gfni();

// Whether the AVX2 kernel multiplies with AVX-VNNI's 256-bit vpdpbusd (CPUs that have it) or with
// vpmaddubsw; NANOCHAT_NO_AVX_VNNI=1 (any value but "" or "0") forces the latter, so tests cover
// both.
bool avx2_uses_avx_vnni();

// Per-ISA entries, defined in the ISA's own translation unit.
const KernelInfo& scalar_kernel();
const KernelInfo& avx2_kernel();
const KernelInfo& avx512_kernel();

}  // namespace nanochat::kernels
