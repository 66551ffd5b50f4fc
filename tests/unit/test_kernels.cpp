// Every kernel, on every ISA this host has, against the scalar reference (and the scalar
// reference against a plain loop over trits), with exact int32 results: all tilings, ragged
// shapes, batches with token tails, extreme activations, and any thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/isa_units.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {
namespace {

struct Problem {
  std::int64_t rows, cols, tokens;
  std::vector<std::int8_t> w;  // rows x cols trits
  std::vector<std::int8_t> x;  // tokens x cols
};

Problem make_problem(std::int64_t rows, std::int64_t cols, std::int64_t tokens, unsigned seed,
                     bool extreme = false) {
  std::mt19937 rng(seed);
  Problem p{rows, cols, tokens, {}, {}};
  p.w.resize(static_cast<std::size_t>(rows * cols));
  p.x.resize(static_cast<std::size_t>(tokens * cols));
  std::uniform_int_distribution<int> trit(-1, 1), act(-128, 127);
  for (auto& v : p.w) v = static_cast<std::int8_t>(extreme ? 1 : trit(rng));
  for (auto& v : p.x) v = static_cast<std::int8_t>(extreme ? -128 : act(rng));
  return p;
}

std::vector<std::int32_t> naive(const Problem& p) {
  std::vector<std::int32_t> y(static_cast<std::size_t>(p.tokens * p.rows));
  for (std::int64_t b = 0; b < p.tokens; ++b)
    for (std::int64_t r = 0; r < p.rows; ++r) {
      std::int32_t acc = 0;
      for (std::int64_t k = 0; k < p.cols; ++k)
        acc += p.w[static_cast<std::size_t>(r * p.cols + k)] *
               p.x[static_cast<std::size_t>(b * p.cols + k)];
      y[static_cast<std::size_t>(b * p.rows + r)] = acc;
    }
  return y;
}

PackedMatrix pack(const Problem& p, Isa isa, int tile_rows,
                  std::optional<Layout> layout = std::nullopt) {
  return pack_matrix(
      p.rows, p.cols,
      [&](std::int64_t r, std::span<std::int8_t> out) {
        std::copy_n(p.w.begin() + r * p.cols, p.cols, out.begin());
      },
      isa, tile_rows, -1, layout);
}

std::vector<std::int32_t> run(const Problem& p, Isa isa, int tile_rows, int token_block,
                              ThreadPool& pool, int variant = 0,
                              std::optional<Layout> layout = std::nullopt) {
  PackedMatrix m = pack(p, isa, tile_rows, layout);
  m.variant = variant;
  PackedActivations x;
  pack_activations_i8(p.x.data(), p.tokens, p.cols, x);
  // Poison the output so unwritten entries show up.
  std::vector<std::int32_t> y(static_cast<std::size_t>(p.tokens * p.rows), 0x7eadbeef);
  run_gemm_i32(m, x, token_block, pool, y.data(), static_cast<std::size_t>(p.rows));
  return y;
}

const std::vector<std::tuple<int, int, int>> kShapes = {
    // rows, cols, tokens: ragged rows and columns, tails of every tiling and token block
    // (and, for kBase3's 320-weight units, last units with 1, 2, 3, 4 and 5 digits of weights)
    {1, 1, 1},
    {3, 255, 2},
    {7, 256, 3},
    {9, 257, 5},
    {17, 700, 1},
    {5, 400, 3},
    {33, 1000, 7},
    {64, 2560, 4},
    {100, 513, 9},
    {8, 6912, 2},
    {12, 1100, 6},
    // one token (decoding's path, which kBase3 runs apart from batches) with every tail
    {9, 257, 1},
    {5, 400, 1},
    {12, 1100, 1},
    {100, 513, 1},
    {64, 2560, 1}};

// The variants a layout's single-token passes have (kBase3: one).
int layout_variants(const KernelInfo& k, Layout layout) {
  return layout == Layout::kBase3 ? 1 : k.variants();
}

class KernelIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam(), cpu_info().features)) {
      GTEST_SKIP() << "this CPU lacks " << isa_requirements(GetParam()) << ", which the "
                   << isa_name(GetParam()) << " kernel needs";
    }
  }
};

TEST(KernelReference, ScalarMatchesPlainLoop) {
  ThreadPool pool(1);
  for (const auto& [rows, cols, tokens] : kShapes) {
    const Problem p = make_problem(rows, cols, tokens, 1234u + static_cast<unsigned>(rows));
    EXPECT_EQ(run(p, Isa::kScalar, 1, 1, pool), naive(p)) << rows << "x" << cols << " b" << tokens;
  }
}

TEST_P(KernelIsa, EveryTilingMatchesScalarExactly) {
  const KernelInfo& k = kernel_info(GetParam());
  ThreadPool pool(1);
  for (const auto& [rows, cols, tokens] : kShapes) {
    const Problem p = make_problem(rows, cols, tokens, 99u + static_cast<unsigned>(cols));
    const auto reference = run(p, Isa::kScalar, 1, 1, pool);
    for (Layout layout : kernel_layouts(GetParam())) {
      for (int tile_rows : k.tile_rows) {
        for (int token_block : k.token_blocks) {
          for (int variant = 0; variant < layout_variants(k, layout); ++variant) {
            EXPECT_EQ(run(p, GetParam(), tile_rows, token_block, pool, variant, layout), reference)
                << k.name << " " << layout_name(layout) << " " << rows << "x" << cols << " b"
                << tokens << " tile " << tile_rows << "x" << token_block << " "
                << k.variant_name(variant);
          }
        }
      }
    }
  }
}

TEST_P(KernelIsa, ExtremeValuesDoNotOverflow) {
  // All weights +1, all activations -128: the largest magnitudes the int8 path can see.
  const KernelInfo& k = kernel_info(GetParam());
  ThreadPool pool(1);
  const Problem p = make_problem(5, 16384, 3, 7, /*extreme=*/true);
  const auto expected = naive(p);
  EXPECT_EQ(expected[0], -128 * 16384);
  for (Layout layout : kernel_layouts(GetParam())) {
    for (int tile_rows : k.tile_rows) {
      for (int variant = 0; variant < layout_variants(k, layout); ++variant) {
        EXPECT_EQ(run(p, GetParam(), tile_rows, k.token_blocks.back(), pool, variant, layout),
                  expected)
            << k.name << " " << layout_name(layout) << " " << k.variant_name(variant);
        EXPECT_EQ(run(p, GetParam(), tile_rows, 1, pool, variant, layout), expected)
            << k.name << " " << layout_name(layout) << " one token at a time, "
            << k.variant_name(variant);
        // A single token alone (decoding's path).
        const Problem one = make_problem(5, 16384, 1, 7, /*extreme=*/true);
        EXPECT_EQ(run(one, GetParam(), tile_rows, 1, pool, variant, layout),
                  std::vector<std::int32_t>(5, -128 * 16384))
            << k.name << " " << layout_name(layout) << " a single token, "
            << k.variant_name(variant);
      }
    }
  }
}

TEST_P(KernelIsa, ThreadCountDoesNotChangeResults) {
  const KernelInfo& k = kernel_info(GetParam());
  ThreadPool one(1);
  for (const int tokens : {6, 1}) {
    const Problem p = make_problem(203, 1500, tokens, 4242);
    for (Layout layout : kernel_layouts(GetParam())) {
      const auto reference =
          run(p, GetParam(), k.tile_rows.back(), k.token_blocks.back(), one, 0, layout);
      EXPECT_EQ(reference, naive(p)) << layout_name(layout);
      for (int threads : {2, 3, 4, 7}) {
        ThreadPool pool(threads);
        EXPECT_EQ(run(p, GetParam(), k.tile_rows.back(), k.token_blocks.back(), pool, 0, layout),
                  reference)
            << layout_name(layout) << ", " << tokens << " tokens, " << threads << " threads";
      }
    }
  }
}

TEST_P(KernelIsa, PackingFromCodesOnAnyThreadsMatchesTheReferencePacking) {
  // pack_matrix_codes (how models repack at load) against pack_matrix, byte for byte, for every
  // tiling, ragged shapes (padding rows and columns) and thread counts.
  const KernelInfo& k = kernel_info(GetParam());
  for (const auto& [rows, cols, tokens] : kShapes) {
    const Problem p = make_problem(rows, cols, tokens, 7u + static_cast<unsigned>(rows * cols));
    const CodeSource codes = [&](std::int64_t r, std::span<std::uint8_t> out) {
      trits_to_tq2_codes(
          std::span<const std::int8_t>(p.w).subspan(static_cast<std::size_t>(r * p.cols),
                                                    static_cast<std::size_t>(p.cols)),
          out);
    };
    for (Layout layout : kernel_layouts(GetParam())) {
      for (int tile_rows : k.tile_rows) {
        const PackedMatrix want = pack(p, GetParam(), tile_rows, layout);
        for (int threads : {1, 2, 3}) {
          ThreadPool pool(threads);
          const PackedMatrix got =
              pack_matrix_codes(rows, cols, codes, GetParam(), tile_rows, pool, -1, layout);
          ASSERT_EQ(got.codes.bytes(), want.codes.bytes());
          EXPECT_EQ(0, std::memcmp(got.codes.data(), want.codes.data(), want.codes.bytes()))
              << k.name << " " << layout_name(layout) << " " << rows << "x" << cols << " tile "
              << tile_rows << ", " << threads << " threads";
          EXPECT_EQ(got.layout, layout);
          EXPECT_EQ(want.layout, layout);
          EXPECT_EQ(got.row_scales, want.row_scales);
        }
      }
    }
  }
}

TEST(KernelPacking, TheLowestFailingRowIsReportedAtAnyThreadCount) {
  // Rows 3, 70 and 150 fail; whichever thread meets its row first, row 3's error comes out.
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const CodeSource source = [](std::int64_t r, std::span<std::uint8_t>) {
      if (r == 3 || r == 70 || r == 150) fail<FormatError>("row {} is bad", r);
    };
    try {
      (void)pack_matrix_codes(200, 512, source, Isa::kScalar, 1, pool);
      ADD_FAILURE() << "no error";
    } catch (const FormatError& e) {
      EXPECT_STREQ(e.what(), "row 3 is bad") << threads << " threads";
    }
  }
  std::vector<std::uint8_t> codes(64, 0x55);
  const std::vector<std::int8_t> two = {0, 2};
  EXPECT_THROW(trits_to_tq2_codes(two, codes), Error);
}

TEST(KernelPacking, Base3HoldsFiveWeightsPerByteAndReadsBack) {
  if (!avx512_uses_vbmi()) GTEST_SKIP() << "no AVX-512 VBMI here (or NANOCHAT_NO_VBMI is set)";
  // 1.6 bits per weight: 2560 weights in 512 bytes a row, against 640 in the 2-bit layout; a
  // ragged row rounds up to whole 320-weight units.
  for (const auto& [rows, cols, tokens] : kShapes) {
    const Problem p = make_problem(rows, cols, tokens, 5u + static_cast<unsigned>(cols));
    for (int tile_rows : kernel_info(Isa::kAvx512).tile_rows) {
      const PackedMatrix m = pack(p, Isa::kAvx512, tile_rows, Layout::kBase3);
      EXPECT_EQ(m.chunks, (cols + 319) / 320);
      EXPECT_EQ(m.weight_bytes(),
                static_cast<std::size_t>(m.tiles * tile_rows * m.chunks * kChunkBytes));
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(packed_trit(m, r, c), p.w[static_cast<std::size_t>(r * cols + c)])
              << rows << "x" << cols << " tile " << tile_rows << " at " << r << "," << c;
        }
      }
      // Every byte is a base-3 number of five digits; padding is five zero weights (121).
      for (std::size_t i = 0; i < m.codes.bytes(); ++i) ASSERT_LT(m.codes[i], 243) << i;
      if (rows % tile_rows != 0) {
        EXPECT_EQ(m.codes[m.codes.bytes() - 1], 121);
      }
    }
  }
  const Problem wide = make_problem(4, 2560, 1, 3);
  EXPECT_EQ(pack(wide, Isa::kAvx512, 4, Layout::kBase3).weight_bytes(), 4u * 512);
  EXPECT_EQ(pack(wide, Isa::kAvx512, 4, Layout::kStride64).weight_bytes(), 4u * 640);
}

TEST(KernelPacking, LayoutsAKernelCannotRunAreRefused) {
  const Problem p = make_problem(4, 256, 1, 1);
  EXPECT_THROW(pack(p, Isa::kScalar, 1, Layout::kBase3), Error);
  EXPECT_THROW(pack(p, Isa::kScalar, 1, Layout::kStride64), Error);
  if (isa_supported(Isa::kAvx2, cpu_info().features)) {
    EXPECT_THROW(pack(p, Isa::kAvx2, 4, Layout::kBase3), Error);
  }
  for (Layout l : {Layout::kTq2, Layout::kStride64, Layout::kBase3}) {
    EXPECT_EQ(parse_layout(layout_name(l)), l);
  }
  EXPECT_EQ(parse_layout("base4"), std::nullopt);
}

TEST(KernelDispatch, NanochatLayoutIsValidated) {
  ::setenv("NANOCHAT_LAYOUT", "base4", 1);
  try {
    (void)layout_override(std::nullopt);
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("NANOCHAT_LAYOUT=base4: unknown weight layout"),
              std::string::npos)
        << e.what();
  }
  ::setenv("NANOCHAT_LAYOUT", "base3", 1);
  try {
    (void)layout_override(Isa::kScalar);
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("base3 needs AVX-512 with VBMI"), std::string::npos)
        << e.what();
  }
  if (avx512_uses_vbmi()) {
    EXPECT_EQ(layout_override(std::nullopt), Layout::kBase3);
  }
  ::setenv("NANOCHAT_LAYOUT", "tq2", 1);
  EXPECT_EQ(layout_override(Isa::kScalar), Layout::kTq2);
  ::unsetenv("NANOCHAT_LAYOUT");
  EXPECT_EQ(layout_override(std::nullopt), std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KernelIsa,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& param_info) {
                           return std::string(isa_name(param_info.param));
                         });

TEST(KernelContext, MatmulDequantizesWithRowAndTokenScales) {
  KernelOptions o;
  o.threads = 2;
  o.tune = TuneMode::kOff;
  o.tune_cache.clear();
  KernelContext ctx(o);
  const Problem p = make_problem(19, 300, 3, 5);
  PackedMatrix m = ctx.pack(p.rows, p.cols, [&](std::int64_t r, std::span<std::int8_t> out) {
    std::copy_n(p.w.begin() + r * p.cols, p.cols, out.begin());
  });
  for (std::int64_t r = 0; r < p.rows; ++r)
    m.row_scales[static_cast<std::size_t>(r)] = 0.5f + static_cast<float>(r);
  std::vector<float> xf(p.x.begin(), p.x.end());
  PackedActivations x;
  pack_activations(xf.data(), p.tokens, p.cols, x);
  std::vector<float> y(static_cast<std::size_t>(p.tokens * p.rows));
  ctx.matmul(m, x, y.data(), static_cast<std::size_t>(p.rows));
  // Reference: quantize the same way, then the plain loop.
  Problem q = p;
  for (std::int64_t b = 0; b < p.tokens; ++b)
    for (std::int64_t k = 0; k < p.cols; ++k)
      q.x[static_cast<std::size_t>(b * p.cols + k)] = x.token(b)[k];
  const auto exact = naive(q);
  for (std::int64_t b = 0; b < p.tokens; ++b)
    for (std::int64_t r = 0; r < p.rows; ++r) {
      const float want = static_cast<float>(exact[static_cast<std::size_t>(b * p.rows + r)]) *
                         (0.5f + static_cast<float>(r)) * x.scales[static_cast<std::size_t>(b)];
      EXPECT_FLOAT_EQ(y[static_cast<std::size_t>(b * p.rows + r)], want);
    }
}

// The AVX-512 kernel has two ways to unpack 2-bit codes, the AVX2 kernel two ways to multiply;
// ctest runs the kernel tests once as they are and once with NANOCHAT_NO_GFNI=1 and
// NANOCHAT_NO_AVX_VNNI=1 ("plain." names), so a CPU with GFNI and AVX-VNNI checks all four.
TEST(KernelDispatch, GfniFollowsTheCpuAndNanochatNoGfni) {
  const char* off = std::getenv("NANOCHAT_NO_GFNI");
  const bool disabled = off != nullptr && *off != '\0' && std::string(off) != "0";
  EXPECT_EQ(avx512_uses_gfni(),
            unit_supported(isa_units::k_avx512_gfni, cpu_info().features) && !disabled);
  RecordProperty("gfni", avx512_uses_gfni() ? "used" : "not used");
}

TEST(KernelDispatch, GfniAndAvxVnniSwitchesGiveTheAutotuneCacheItsOwnFile) {
  // Plans measured without an instruction set must not land in (or be read from) the file of
  // runs with it: a GFNI plan would be unusable, a shift-only one would replace the faster plan.
  const std::string name = Autotuner::default_cache_file().filename().string();
  const bool gfni_off =
      unit_supported(isa_units::k_avx512_gfni, cpu_info().features) && !avx512_uses_gfni();
  const bool vnni_off =
      unit_supported(isa_units::k_avx2_vnni, cpu_info().features) && !avx2_uses_avx_vnni();
  EXPECT_EQ(name.find("-nogfni") != std::string::npos, gfni_off) << name;
  EXPECT_EQ(name.find("-noavxvnni") != std::string::npos, vnni_off) << name;
  const bool vbmi_off =
      unit_supported(isa_units::k_avx512_vbmi, cpu_info().features) && !avx512_uses_vbmi();
  EXPECT_EQ(name.find("-novbmi") != std::string::npos, vbmi_off) << name;
}

TEST(KernelDispatch, VbmiFollowsTheCpuAndNanochatNoVbmi) {
  const char* off = std::getenv("NANOCHAT_NO_VBMI");
  const bool disabled = off != nullptr && *off != '\0' && std::string(off) != "0";
  EXPECT_EQ(avx512_uses_vbmi(),
            unit_supported(isa_units::k_avx512_vbmi, cpu_info().features) && !disabled);
  const auto layouts = kernel_layouts(Isa::kAvx512);
  EXPECT_EQ(std::find(layouts.begin(), layouts.end(), Layout::kBase3) != layouts.end(),
            avx512_uses_vbmi());
  RecordProperty("base3", avx512_uses_vbmi() ? "used" : "not used");
}

TEST(KernelDispatch, AvxVnniFollowsTheCpuAndNanochatNoAvxVnni) {
  const char* off = std::getenv("NANOCHAT_NO_AVX_VNNI");
  const bool disabled = off != nullptr && *off != '\0' && std::string(off) != "0";
  EXPECT_EQ(avx2_uses_avx_vnni(),
            unit_supported(isa_units::k_avx2_vnni, cpu_info().features) && !disabled);
  RecordProperty("avx_vnni", avx2_uses_avx_vnni() ? "used" : "not used");
}

// The gates check every extension each unit is compiled with (the table in src/CMakeLists.txt).
TEST(KernelDispatch, GatesCheckEveryExtensionOfTheUnit) {
  CpuFeatures haswell;
  haswell.sse42 = haswell.avx = haswell.avx2 = haswell.fma = haswell.f16c = true;
  CpuFeatures skylake_x = haswell;  // AVX-512 without VNNI
  skylake_x.avx512f = skylake_x.avx512bw = skylake_x.avx512vl = skylake_x.avx512dq = true;
  CpuFeatures cascade_lake = skylake_x;  // + VNNI, no GFNI
  cascade_lake.avx512vnni = true;
  CpuFeatures ice_lake = cascade_lake;
  ice_lake.avx512vbmi = ice_lake.gfni = true;
  CpuFeatures no_vl = cascade_lake;
  no_vl.avx512vl = false;
  CpuFeatures no_f16c = haswell;
  no_f16c.f16c = false;

  EXPECT_TRUE(isa_supported(Isa::kAvx2, haswell));
  EXPECT_FALSE(isa_supported(Isa::kAvx2, no_f16c));
  EXPECT_FALSE(isa_supported(Isa::kAvx512, haswell));
  EXPECT_FALSE(isa_supported(Isa::kAvx512, skylake_x));
  EXPECT_TRUE(isa_supported(Isa::kAvx512, cascade_lake));
  EXPECT_FALSE(isa_supported(Isa::kAvx512, no_vl));
  EXPECT_FALSE(unit_supported(isa_units::k_avx512_gfni, cascade_lake));
  EXPECT_TRUE(unit_supported(isa_units::k_avx512_gfni, ice_lake));
  EXPECT_FALSE(unit_supported(isa_units::k_avx2_vnni, ice_lake));  // AVX-VNNI is another CPUID bit
  EXPECT_TRUE(isa_supported(Isa::kScalar, CpuFeatures{}));
  // Every extension a unit names is one CpuFeatures knows (else has() throws InternalError).
  for (auto unit : {std::span<const std::string_view>(isa_units::k_avx2),
                    std::span<const std::string_view>(isa_units::k_avx2_vnni),
                    std::span<const std::string_view>(isa_units::k_avx512),
                    std::span<const std::string_view>(isa_units::k_avx512_gfni)}) {
    for (std::string_view x : unit) EXPECT_NO_THROW((void)ice_lake.has(x)) << x;
  }
  EXPECT_THROW((void)ice_lake.has("avx10"), InternalError);
}

TEST(KernelDispatch, DefaultIsaIsTheBestAvailable) {
  const auto isas = available_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), Isa::kScalar);
  ::unsetenv("NANOCHAT_ISA");
  EXPECT_EQ(default_isa(), isas.front());
  ::setenv("NANOCHAT_ISA", "scalar", 1);
  EXPECT_EQ(default_isa(), Isa::kScalar);
  ::setenv("NANOCHAT_ISA", "sse9", 1);
  EXPECT_THROW(default_isa(), UsageError);
  ::unsetenv("NANOCHAT_ISA");
  EXPECT_THROW(isa_override("avx1024"), UsageError);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!isa_supported(isa, cpu_info().features)) {
      EXPECT_THROW(isa_override(isa_name(isa)), UsageError);
    }
  }
}

}  // namespace
}  // namespace nanochat::kernels
