// RapidCheck properties: block and runtime-layout round trips, quantizer invariants.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "nanochat/kernels/packed.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::ternary {
namespace {

rc::Gen<std::vector<std::int8_t>> gen_trits(std::size_t n) {
  return rc::gen::container<std::vector<std::int8_t>>(
      n, rc::gen::map(rc::gen::inRange(-1, 2), [](int v) { return static_cast<std::int8_t>(v); }));
}

// Scales that survive the fp16 round trip exactly.
rc::Gen<float> gen_half_scale() {
  return rc::gen::map(rc::gen::inRange(1, 0x7bff),
                      [](int h) { return fp16_to_fp32(static_cast<std::uint16_t>(h)); });
}

RC_GTEST_PROP(BlockProps, Tq2RoundTrip, ()) {
  const auto blocks = static_cast<std::size_t>(*rc::gen::inRange(1, 5));
  const auto trits = *gen_trits(blocks * 256);
  const auto scales = *rc::gen::container<std::vector<float>>(blocks, gen_half_scale());
  std::vector<std::uint8_t> bytes(tq2_0_bytes(static_cast<std::int64_t>(trits.size())));
  encode_tq2_0(trits, scales, bytes);
  std::vector<std::int8_t> back(trits.size());
  std::vector<float> back_scales(blocks);
  decode_tq2_0(bytes, back, back_scales);
  RC_ASSERT(back == trits);
  RC_ASSERT(back_scales == scales);
}

RC_GTEST_PROP(BlockProps, Tq1RoundTrip, ()) {
  const auto blocks = static_cast<std::size_t>(*rc::gen::inRange(1, 5));
  const auto trits = *gen_trits(blocks * 256);
  const auto scales = *rc::gen::container<std::vector<float>>(blocks, gen_half_scale());
  std::vector<std::uint8_t> bytes(tq1_0_bytes(static_cast<std::int64_t>(trits.size())));
  encode_tq1_0(trits, scales, bytes);
  std::vector<std::int8_t> back(trits.size());
  std::vector<float> back_scales(blocks);
  decode_tq1_0(bytes, back, back_scales);
  RC_ASSERT(back == trits);
  RC_ASSERT(back_scales == scales);
}

RC_GTEST_PROP(BlockProps, I2sRoundTrip, (float scale)) {
  const auto groups = static_cast<std::size_t>(*rc::gen::inRange(1, 9));
  const auto trits = *gen_trits(groups * 128);
  std::vector<std::uint8_t> bytes(i2_s_bytes(static_cast<std::int64_t>(trits.size())));
  encode_i2_s(trits, scale, bytes);
  std::vector<std::int8_t> back(trits.size());
  const float got = decode_i2_s(bytes, back);
  RC_ASSERT(back == trits);
  RC_ASSERT(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(scale));
}

RC_GTEST_PROP(BlockProps, RuntimeLayoutsRoundTrip, ()) {
  const std::int64_t rows = *rc::gen::inRange(1, 20);
  const std::int64_t cols = *rc::gen::inRange(1, 700);  // tails included
  const auto trits = *gen_trits(static_cast<std::size_t>(rows * cols));
  for (const auto& k : kernels::kernel_registry()) {
    for (int tile_rows : k.tile_rows) {
      const auto m = kernels::pack_matrix(
          rows, cols,
          [&](std::int64_t r, std::span<std::int8_t> out) {
            std::copy_n(trits.begin() + r * cols, cols, out.begin());
          },
          k.isa, tile_rows);
      RC_ASSERT(reinterpret_cast<std::uintptr_t>(m.codes.data()) % 64 == 0);
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          RC_ASSERT(kernels::packed_trit(m, r, c) == trits[static_cast<std::size_t>(r * cols + c)]);
        }
        for (std::int64_t c = cols; c < m.chunks * kernels::kChunk; ++c) {
          RC_ASSERT(kernels::packed_trit(m, r, c) == 0);  // padding is weight 0
        }
      }
    }
  }
}

RC_GTEST_PROP(QuantizerProps, AbsmeanInvariants, ()) {
  const std::int64_t rows = *rc::gen::inRange(1, 6);
  const std::int64_t groups = *rc::gen::inRange(1, 4);
  const std::int64_t group = *rc::gen::element<std::int64_t>(0, 8, 32);
  const std::int64_t cols = (group == 0 ? 8 : group) * groups;
  const auto w = *rc::gen::container<std::vector<float>>(
      static_cast<std::size_t>(rows * cols),
      rc::gen::map(rc::gen::inRange(-100000, 100001),
                   [](int v) { return static_cast<float>(v) / 1000.0f; }));
  const TernaryTensor t = quantize_absmean(w, rows, cols, group);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const float s = t.scale_at(r, c);
      const float x = w[static_cast<std::size_t>(r * cols + c)];
      const std::int8_t q = t.trits[static_cast<std::size_t>(r * cols + c)];
      RC_ASSERT(s >= kScaleEps);
      RC_ASSERT(q >= -1 && q <= 1);
      // q is round(x / s) clamped: within half a step unless clamped, and sign-consistent.
      if (std::fabs(x / s) <= 1.0f)
        RC_ASSERT(std::fabs(x / s - static_cast<float>(q)) <= 0.5f + 1e-5f);
      if (q != 0) RC_ASSERT((q > 0) == (x > 0));
    }
  }
}

RC_GTEST_PROP(QuantizerProps, ActivationInvariants, ()) {
  const std::int64_t cols = *rc::gen::inRange(1, 300);
  const auto x = *rc::gen::container<std::vector<float>>(
      static_cast<std::size_t>(cols), rc::gen::map(rc::gen::inRange(-1000000, 1000001), [](int v) {
        return static_cast<float>(v) / 977.0f;
      }));
  std::vector<std::int8_t> q(static_cast<std::size_t>(cols));
  float scale = 0;
  quantize_activations(x.data(), 1, cols, q.data(), static_cast<std::size_t>(cols), &scale);
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  RC_ASSERT(scale > 0);
  bool hit_max = false;
  for (std::int64_t i = 0; i < cols; ++i) {
    const auto qi = q[static_cast<std::size_t>(i)];
    RC_ASSERT(qi >= -127 && qi <= 127);  // symmetric: -128 never produced
    RC_ASSERT(std::fabs(static_cast<float>(qi) * scale - x[static_cast<std::size_t>(i)]) <=
              0.5f * scale * 1.0001f + 1e-6f);
    hit_max |= std::abs(qi) == 127;
  }
  if (amax > kScaleEps) RC_ASSERT(hit_max);
}

}  // namespace
}  // namespace nanochat::ternary
