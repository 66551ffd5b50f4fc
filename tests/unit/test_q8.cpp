// Q8_0 x int8 kernels on every ISA the host has against a plain double-precision loop.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "nanochat/kernels/q8.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::kernels {
namespace {

TEST(Q8, EveryIsaMatchesAPlainLoop) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> q(-127, 127), xq(-127, 127);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  for (const auto& [rows, cols, tokens] : std::vector<std::tuple<int, int, int>>{
           {1, 32, 1}, {7, 96, 2}, {33, 2560, 3}, {5, 288, 4}, {9, 320, 7}, {64, 256, 8}}) {
    std::vector<std::uint8_t> blocks(static_cast<std::size_t>(rows * cols / 32 * 34));
    std::vector<float> dq(static_cast<std::size_t>(rows * cols));
    for (std::size_t b = 0; b < blocks.size() / 34; ++b) {
      const std::uint16_t h = fp32_to_fp16(scale(rng));
      std::memcpy(&blocks[b * 34], &h, 2);
      for (std::size_t i = 0; i < 32; ++i) {
        const auto v = static_cast<std::int8_t>(q(rng));
        blocks[b * 34 + 2 + i] = static_cast<std::uint8_t>(v);
        dq[b * 32 + i] = fp16_to_fp32(h) * v;
      }
    }
    std::vector<std::int8_t> x(static_cast<std::size_t>(tokens * cols));
    for (auto& v : x) v = static_cast<std::int8_t>(xq(rng));
    PackedActivations acts;
    pack_activations_i8(x.data(), tokens, cols, acts);
    for (auto& s : acts.scales) s = 0.5f;
    std::int64_t reported = 0;  // rows_done counts up by one per row, in order
    const Q8Matrix m = pack_q8_0(blocks, rows, cols, [&](std::int64_t done) {
      EXPECT_EQ(done, reported + 1);
      reported = done;
    });
    EXPECT_EQ(reported, rows);
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (!isa_supported(isa, cpu_info().features)) continue;
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        std::vector<float> y(static_cast<std::size_t>(tokens * rows));
        q8_matmul(m, acts, isa, pool, y.data(), static_cast<std::size_t>(rows));
        for (int b = 0; b < tokens; ++b)
          for (int r = 0; r < rows; ++r) {
            double want = 0;
            for (int i = 0; i < cols; ++i)
              want += static_cast<double>(dq[static_cast<std::size_t>(r) * cols + i]) *
                      x[static_cast<std::size_t>(b) * cols + i];
            want *= 0.5;
            EXPECT_NEAR(y[static_cast<std::size_t>(b * rows + r)], want,
                        1e-4 * (1 + std::fabs(want)))
                << isa_name(isa) << " " << rows << "x" << cols << " token " << b << " row " << r;
          }
        // Each token alone gives bit for bit what it gave beside the others (continuous
        // batching depends on it: a request's text must not depend on its neighbours).
        for (int b = 0; b < tokens; ++b) {
          PackedActivations one;
          pack_activations_i8(x.data() + static_cast<std::size_t>(b) * cols, 1, cols, one);
          one.scales[0] = 0.5f;
          std::vector<float> alone(static_cast<std::size_t>(rows));
          q8_matmul(m, one, isa, pool, alone.data(), static_cast<std::size_t>(rows));
          EXPECT_TRUE(std::equal(alone.begin(), alone.end(),
                                 y.begin() + static_cast<std::ptrdiff_t>(b * rows)))
              << isa_name(isa) << " " << rows << "x" << cols << " token " << b << " of " << tokens;
        }
      }
    }
  }
}

TEST(Q8, BadShapesAreErrors) {
  std::vector<std::uint8_t> blocks(34);
  EXPECT_THROW(pack_q8_0(blocks, 1, 31), FormatError);
  EXPECT_THROW(pack_q8_0(blocks, 2, 32), FormatError);
}

}  // namespace
}  // namespace nanochat::kernels
