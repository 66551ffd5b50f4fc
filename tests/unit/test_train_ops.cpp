// Every training op's backward against central finite differences of its forward: for a random
// projection r, L(x) = sum r . op(x) and dL/dx from the backward must match
// (L(x + h e_i) - L(x - h e_i)) / 2h. The ternary linear layer's quantizers are piecewise constant,
// so its straight-through backward is checked against plain loops instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nanochat/kernels/packed.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/train/ops.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::train {
namespace {

std::size_t sz(std::int64_t v) { return static_cast<std::size_t>(v); }

std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng, float spread = 1.0f) {
  std::normal_distribution<float> d(0.0f, spread);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double project(const std::vector<float>& r, const std::vector<float>& y) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += static_cast<double>(r[i]) * y[i];
  return s;
}

// Checks `analytic` (dL/dx) against finite differences of `loss` over `x`, at up to 40 entries.
void expect_gradient(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                     const std::function<double()>& loss, double h = 1e-2, double tol = 2e-2) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const std::size_t step = std::max<std::size_t>(1, x.size() / 40);
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); i += step) {
    const float keep = x[i];
    x[i] = keep + static_cast<float>(h);
    const double up = loss();
    x[i] = keep - static_cast<float>(h);
    const double down = loss();
    x[i] = keep;
    const double numeric = (up - down) / (2 * h);
    const double err = std::fabs(numeric - analytic[i]) / std::max(1.0, std::fabs(numeric));
    worst = std::max(worst, err);
    EXPECT_LE(err, tol) << what << "[" << i << "]: analytic " << analytic[i] << " numeric "
                        << numeric;
  }
  ::testing::Test::RecordProperty(what, std::to_string(worst));
}

class TrainOps : public ::testing::Test {
 protected:
  kernels::ThreadPool pool{2};
  std::mt19937_64 rng{42};
};

TEST_F(TrainOps, RmsNormGradients) {
  const std::int64_t n = 3, c = 16;
  auto x = random_vector(n * c, rng), w = random_vector(c, rng), r = random_vector(n * c, rng);
  std::vector<float> y(n * c), rstd(n), dx(n * c), dw(c, 0.0f);
  auto loss = [&] {
    rmsnorm_forward(pool, x.data(), w.data(), n, c, 1e-5f, y.data(), rstd.data());
    return project(r, y);
  };
  loss();
  rmsnorm_backward(pool, x.data(), w.data(), rstd.data(), r.data(), n, c, dx.data(), dw.data());
  expect_gradient("rmsnorm dx", x, dx, loss);
  expect_gradient("rmsnorm dw", w, dw, loss);
}

TEST_F(TrainOps, RopeGradientsBothStyles) {
  const std::int64_t t = 5, heads = 2, hd = 8, n = 2 * t;
  const RopeTable table(t, hd, 10000.0f);
  for (auto style : {model::RopeStyle::kAdjacent, model::RopeStyle::kHalves}) {
    auto x = random_vector(n * heads * hd, rng), r = random_vector(x.size(), rng);
    auto loss = [&] {
      auto y = x;
      rope_forward(pool, table, y.data(), n, t, heads, style);
      return project(r, y);
    };
    auto dx = r;
    rope_backward(pool, table, dx.data(), n, t, heads, style);
    expect_gradient("rope dx", x, dx, loss);
  }
}

TEST_F(TrainOps, AttentionGradients) {
  const AttentionShape s{2, 5, 4, 2, 8};
  const std::int64_t n = s.b * s.t;
  auto q = random_vector(n * s.heads * s.head_dim, rng);
  auto k = random_vector(n * s.kv_heads * s.head_dim, rng);
  auto v = random_vector(k.size(), rng);
  auto r = random_vector(q.size(), rng);
  std::vector<float> out(q.size()), probs(s.b * s.heads * s.t * s.t);
  auto loss = [&] {
    attention_forward(pool, s, q.data(), k.data(), v.data(), out.data(), probs.data());
    return project(r, out);
  };
  loss();
  // Causality: each row of probabilities sums to 1 over j <= t and is 0 beyond.
  for (std::int64_t row = 0; row < s.b * s.heads * s.t; ++row) {
    const std::int64_t t = row % s.t;
    double sum = 0;
    for (std::int64_t j = 0; j < s.t; ++j) {
      if (j > t) {
        EXPECT_EQ(probs[row * s.t + j], 0.0f);
      }
      sum += probs[row * s.t + j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  // Against a double-precision softmax of the same scores (the vectorized exp is ~1 ulp).
  for (std::int64_t b = 0; b < s.b; ++b) {
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t t = s.t - 1, kvh = h / (s.heads / s.kv_heads);
      std::vector<double> z(static_cast<std::size_t>(t + 1));
      double top = -1e300, total = 0;
      for (std::int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (std::int64_t i = 0; i < s.head_dim; ++i) {
          dot += static_cast<double>(q[((b * s.t + t) * s.heads + h) * s.head_dim + i]) *
                 k[((b * s.t + j) * s.kv_heads + kvh) * s.head_dim + i];
        }
        z[j] = dot / std::sqrt(static_cast<double>(s.head_dim));
        top = std::max(top, z[j]);
      }
      for (auto& zj : z) total += (zj = std::exp(zj - top));
      for (std::int64_t j = 0; j <= t; ++j) {
        EXPECT_NEAR(probs[((b * s.heads + h) * s.t + t) * s.t + j], z[j] / total, 2e-6);
      }
    }
  }
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(pool, s, q.data(), k.data(), v.data(), probs.data(), r.data(), dq.data(),
                     dk.data(), dv.data());
  expect_gradient("attention dq", q, dq, loss);
  expect_gradient("attention dk", k, dk, loss);
  expect_gradient("attention dv", v, dv, loss);
  // With bf16 GEMMs (8 significant bits per operand): close to the fp32 gradients.
  if (cpu_info().features.avx512bf16) {
    loss();  // probs for the unperturbed inputs
    std::vector<float> dq16(q.size()), dk16(k.size()), dv16(v.size());
    attention_backward(pool, s, q.data(), k.data(), v.data(), probs.data(), r.data(), dq16.data(),
                       dk16.data(), dv16.data(), GemmPrecision::kBf16);
    for (auto [got, want] : {std::pair{&dq16, &dq}, {&dk16, &dk}, {&dv16, &dv}}) {
      float scale = 0;
      for (float x : *want) scale = std::max(scale, std::fabs(x));
      for (std::size_t i = 0; i < want->size(); ++i) {
        EXPECT_NEAR((*got)[i], (*want)[i], 0.03f * scale) << i;
      }
    }
  }
}

// Beyond one block of queries (150 = 64 + 64 + 22, grouped heads): the backward over the causal
// triangle against the dense formulas in double precision, in fp32 and (where the CPU has it)
// bf16.
TEST_F(TrainOps, AttentionBackwardOverBlocksMatchesDenseFormulas) {
  const AttentionShape s{2, 150, 4, 2, 16};
  const std::int64_t T = s.t, H = s.heads, KV = s.kv_heads, D = s.head_dim, group = H / KV;
  const std::int64_t ldq = H * D, ldk = KV * D;
  auto q = random_vector(sz(s.b * T * ldq), rng), k = random_vector(sz(s.b * T * ldk), rng);
  auto v = random_vector(k.size(), rng), d_out = random_vector(q.size(), rng);
  std::vector<float> out(q.size()), probs(sz(s.b * H * T * T));
  attention_forward(pool, s, q.data(), k.data(), v.data(), out.data(), probs.data());
  std::vector<double> want_q(q.size()), want_k(k.size()), want_v(v.size());
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::int64_t b = 0; b < s.b; ++b) {
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t kvh = h / group;
      const auto qi = [&](std::int64_t t, std::int64_t i) {
        return sz((b * T + t) * ldq + h * D + i);
      };
      const auto ki = [&](std::int64_t t, std::int64_t i) {
        return sz((b * T + t) * ldk + kvh * D + i);
      };
      for (std::int64_t t = 0; t < T; ++t) {
        const float* p = probs.data() + ((b * H + h) * T + t) * T;
        std::vector<double> dp(sz(t + 1));
        double weighted = 0;
        for (std::int64_t j = 0; j <= t; ++j) {
          for (std::int64_t i = 0; i < D; ++i) dp[sz(j)] += double{d_out[qi(t, i)]} * v[ki(j, i)];
          weighted += p[j] * dp[sz(j)];
        }
        for (std::int64_t j = 0; j <= t; ++j) {
          const double ds = p[j] * (dp[sz(j)] - weighted) * scale;
          for (std::int64_t i = 0; i < D; ++i) {
            want_q[qi(t, i)] += ds * k[ki(j, i)];
            want_k[ki(j, i)] += ds * q[qi(t, i)];
            want_v[ki(j, i)] += p[j] * double{d_out[qi(t, i)]};
          }
        }
      }
    }
  }
  for (const auto precision : {GemmPrecision::kF32, GemmPrecision::kBf16}) {
    if (precision == GemmPrecision::kBf16 && !cpu_info().features.avx512bf16) continue;
    const float tolerance = precision == GemmPrecision::kF32 ? 1e-4f : 0.03f;
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    attention_backward(pool, s, q.data(), k.data(), v.data(), probs.data(), d_out.data(), dq.data(),
                       dk.data(), dv.data(), precision);
    for (auto [got, want] : {std::pair{&dq, &want_q}, {&dk, &want_k}, {&dv, &want_v}}) {
      double range = 0;
      for (double x : *want) range = std::max(range, std::fabs(x));
      for (std::size_t i = 0; i < want->size(); ++i) {
        ASSERT_NEAR((*got)[i], (*want)[i], tolerance * range) << i;
      }
    }
  }
}

// The trainer's attention against inference's one-query-at-a-time attention_row, bit for bit:
// export parity depends on it (a score summed in another order can flip an int8 code of the
// next layer's input).
TEST_F(TrainOps, TrainerAttentionEqualsInferencesRowAttentionExactly) {
  const AttentionShape s{2, 150, 4, 2, 16};
  const std::int64_t n = s.b * s.t, ldq = s.heads * s.head_dim, ldk = s.kv_heads * s.head_dim;
  auto q = random_vector(n * ldq, rng), k = random_vector(n * ldk, rng);
  auto v = random_vector(k.size(), rng);
  std::vector<float> out(q.size()), probs(s.b * s.heads * s.t * s.t);
  attention_forward(pool, s, q.data(), k.data(), v.data(), out.data(), probs.data());
  std::vector<float> p(s.t), o(s.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  for (std::int64_t b = 0; b < s.b; ++b) {
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t kvh = h / (s.heads / s.kv_heads);
      for (std::int64_t t = 0; t < s.t; ++t) {
        kernels::attention_row(q.data() + (b * s.t + t) * ldq + h * s.head_dim,
                               k.data() + b * s.t * ldk + kvh * s.head_dim,
                               v.data() + b * s.t * ldk + kvh * s.head_dim, ldk, t + 1, s.head_dim,
                               scale, p.data(), o.data());
        const float* row = probs.data() + ((b * s.heads + h) * s.t + t) * s.t;
        for (std::int64_t j = 0; j < s.t; ++j) {
          ASSERT_EQ(row[j], j <= t ? p[j] : 0.0f) << "b " << b << " h " << h << " t " << t;
        }
        for (std::int64_t i = 0; i < s.head_dim; ++i) {
          ASSERT_EQ(out[(b * s.t + t) * ldq + h * s.head_dim + i], o[i]) << "t " << t;
        }
      }
    }
  }
}

// attention_row against double precision where neither the keys (37) nor the head width (40)
// fill whole 16-wide blocks, and the keys sit in a strided cache.
TEST_F(TrainOps, AttentionRowMatchesDoublePrecisionForRaggedShapes) {
  const std::int64_t len = 37, d = 40, stride = 3 * d;
  auto q = random_vector(d, rng), keys = random_vector(len * stride, rng);
  auto values = random_vector(len * stride, rng);
  std::vector<float> p(len), out(d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  kernels::attention_row(q.data(), keys.data(), values.data(), stride, len, d, scale, p.data(),
                         out.data());
  std::vector<double> z(len);
  double top = -1e300, total = 0;
  for (std::int64_t j = 0; j < len; ++j) {
    double dot = 0;
    for (std::int64_t i = 0; i < d; ++i) dot += static_cast<double>(q[i]) * keys[j * stride + i];
    z[j] = dot * scale;
    top = std::max(top, z[j]);
  }
  for (auto& zj : z) total += (zj = std::exp(zj - top));
  for (std::int64_t i = 0; i < d; ++i) {
    double want = 0;
    for (std::int64_t j = 0; j < len; ++j) want += z[j] / total * values[j * stride + i];
    EXPECT_NEAR(out[i], want, 1e-5) << i;
  }
  for (std::int64_t j = 0; j < len; ++j) EXPECT_NEAR(p[j], z[j] / total, 2e-6) << j;
}

// attention_rows (several queries of a head at once, key blocks outer) against attention_row one
// query at a time, bit for bit: head widths with and without whole 16-wide chunks and past the
// register-resident widths, queries that see fewer than sixteen keys, a cache that already holds
// `start` positions, and query counts that do not fill the value pass's groups.
TEST_F(TrainOps, AttentionRowsEqualRowAtATime) {
  for (const std::int64_t d : {16, 40, 64, 80, 128, 200}) {
    for (const std::int64_t start : {0, 5, 37}) {
      for (const std::int64_t n : {1, 3, 17, 34}) {
        const std::int64_t stride = 2 * d + 16, len = start + n, p_stride = len + 3;
        const std::int64_t q_stride = d + 8, out_stride = d + 4;
        auto q = random_vector(sz(n * q_stride), rng), keys = random_vector(sz(len * stride), rng);
        auto values = random_vector(sz(len * stride), rng);
        std::vector<float> p(sz(n * p_stride), -7.0f), out(sz(n * out_stride), -7.0f);
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        kernels::attention_rows(q.data(), q_stride, n, start, keys.data(), values.data(), stride, d,
                                scale, p.data(), p_stride, out.data(), out_stride);
        std::vector<float> p1(sz(len)), o1(sz(d));
        for (std::int64_t i = 0; i < n; ++i) {
          const std::string where = "d " + std::to_string(d) + " start " + std::to_string(start) +
                                    " n " + std::to_string(n) + " query " + std::to_string(i);
          kernels::attention_row(q.data() + i * q_stride, keys.data(), values.data(), stride,
                                 start + i + 1, d, scale, p1.data(), o1.data());
          for (std::int64_t j = 0; j <= start + i; ++j) {
            ASSERT_EQ(p[sz(i * p_stride + j)], p1[sz(j)]) << where << " key " << j;
          }
          for (std::int64_t j = start + i + 1; j < p_stride; ++j) {
            ASSERT_EQ(p[sz(i * p_stride + j)], -7.0f) << where << " wrote past its keys at " << j;
          }
          for (std::int64_t c = 0; c < d; ++c) {
            ASSERT_EQ(out[sz(i * out_stride + c)], o1[sz(c)]) << where << " lane " << c;
          }
          ASSERT_EQ(out[sz(i * out_stride + d)], -7.0f) << where << " wrote past its output";
        }
      }
    }
  }
}

// On AVX-512, a score is summed in one documented order, whatever the kernel's loop structure:
// lane l of the head's 16-wide chunks accumulates q[16c + l] k[16c + l] by fused multiply-adds
// over the chunks in order (a short last chunk adds nothing past d), then the sixteen lane sums
// as ((x0 + x2) + (x1 + x3)) per group of four, groups as (g0 + g1) + (g2 + g3), times the scale.
// Inference's cache and the trainer must agree on it; this pins it down independently.
TEST_F(TrainOps, AttentionScoresFollowTheLaneTreeOnAvx512) {
  const auto& f = cpu_info().features;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) {
    GTEST_SKIP() << "the scalar path sums scores in another order; this CPU lacks AVX-512";
  }
  for (const std::int64_t d : {16, 40, 64, 128, 200}) {
    for (const std::int64_t len : {1, 7, 16, 23, 64, 70}) {
      const std::int64_t stride = d + 16;
      auto q = random_vector(sz(d), rng), keys = random_vector(sz(len * stride), rng);
      auto values = random_vector(sz(len * stride), rng);
      std::vector<float> p(sz(len)), out(sz(d)), want(sz(len));
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      kernels::attention_row(q.data(), keys.data(), values.data(), stride, len, d, scale, p.data(),
                             out.data());
      for (std::int64_t j = 0; j < len; ++j) {
        float lane[16] = {};
        for (std::int64_t c = 0; c * 16 < d; ++c) {
          for (std::int64_t l = 0; l < 16 && c * 16 + l < d; ++l) {
            lane[l] = std::fma(q[sz(c * 16 + l)], keys[sz(j * stride + c * 16 + l)], lane[l]);
          }
        }
        float group[4];
        for (int g = 0; g < 4; ++g) {
          group[g] = (lane[4 * g] + lane[4 * g + 2]) + (lane[4 * g + 1] + lane[4 * g + 3]);
        }
        want[sz(j)] = ((group[0] + group[1]) + (group[2] + group[3])) * scale;
      }
      kernels::softmax_inplace(want.data(), len);
      for (std::int64_t j = 0; j < len; ++j) {
        ASSERT_EQ(p[sz(j)], want[sz(j)]) << "d " << d << " len " << len << " key " << j;
      }
    }
  }
}

// The weighted sum of values for the head widths the AVX-512 path keeps in registers (16 to 128):
// each lane is the fused multiply-add chain over the keys in order, exactly, where the CPU has
// AVX-512 (FMA), and close to double precision everywhere.
TEST_F(TrainOps, AttentionRowValuesSumInKeyOrder) {
  const bool fma = cpu_info().features.avx512f && cpu_info().features.avx512bw &&
                   cpu_info().features.avx512vl && cpu_info().features.avx512dq;
  for (const std::int64_t d : {16, 32, 48, 64, 80, 96, 112, 128}) {
    const std::int64_t len = 29, stride = 2 * d + 16;
    auto q = random_vector(sz(d), rng), keys = random_vector(sz(len * stride), rng);
    auto values = random_vector(sz(len * stride), rng);
    std::vector<float> p(sz(len)), out(sz(d));
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    kernels::attention_row(q.data(), keys.data(), values.data(), stride, len, d, scale, p.data(),
                           out.data());
    for (std::int64_t i = 0; i < d; ++i) {
      float chain = 0.0f;
      double exact = 0;
      for (std::int64_t j = 0; j < len; ++j) {
        chain = std::fma(p[sz(j)], values[sz(j * stride + i)], chain);
        exact += static_cast<double>(p[sz(j)]) * values[sz(j * stride + i)];
      }
      if (fma) {
        EXPECT_EQ(out[sz(i)], chain) << "d " << d << " lane " << i;
      }
      EXPECT_NEAR(out[sz(i)], exact, 1e-5) << "d " << d << " lane " << i;
    }
  }
}

TEST_F(TrainOps, FfnActivationGradients) {
  for (auto act : {model::FfnActivation::kSwiGlu, model::FfnActivation::kReluSquared}) {
    const std::int64_t n = 64;
    auto g = random_vector(n, rng), u = random_vector(n, rng), r = random_vector(n, rng);
    for (auto& x : g) {
      if (std::fabs(x) < 0.05f) x = 0.3f;  // keep relu2's kink away from the probes
    }
    std::vector<float> h(n), dg(n), du(n);
    auto loss = [&] {
      ffn_act_forward(pool, act, g.data(), u.data(), n, h.data());
      return project(r, h);
    };
    ffn_act_backward(pool, act, g.data(), u.data(), r.data(), n, dg.data(), du.data());
    expect_gradient("ffn dgate", g, dg, loss, 1e-3);
    expect_gradient("ffn dup", u, du, loss, 1e-3);
  }
}

TEST_F(TrainOps, MhcGradientsForTwoAndFourStreams) {
  for (int streams : {2, 4}) {
    const std::int64_t rows = 3, c = 8;
    mhc::MhcParams p = mhc::MhcParams::identity(streams);
    for (int i = 0; i < streams; ++i) {
      p.h_pre[static_cast<std::size_t>(i)] = 0.3f + 0.1f * static_cast<float>(i);
      p.h_post[static_cast<std::size_t>(i)] = 0.8f + 0.2f * static_cast<float>(i);
    }
    for (auto& l : p.res_logits) l = std::normal_distribution<float>(0.0f, 1.0f)(rng);
    // Packed parameters as the model stores them.
    std::vector<float> packed = mhc::pack(p);
    auto unpack = [&] { p = mhc::unpack(packed, streams); };
    auto x = random_vector(rows * streams * c, rng), y = random_vector(rows * c, rng);
    auto r_new = random_vector(x.size(), rng), r_u = random_vector(rows * c, rng);
    // L = r_new . write(x, y) + r_u . read(x)
    auto loss = [&] {
      unpack();
      std::vector<float> x_new(x.size()), u(rows * c);
      mhc_write_forward(pool, p, mhc::residual_matrix(p), x.data(), y.data(), rows, c,
                        x_new.data());
      mhc_read_forward(pool, p, x.data(), rows, c, u.data());
      return project(r_new, x_new) + project(r_u, u);
    };
    unpack();
    std::vector<float> dx(x.size()), dy(y.size()), dparams(packed.size(), 0.0f);
    mhc_write_backward(p, mhc::residual_matrix(p), x.data(), y.data(), r_new.data(), rows, c,
                       dx.data(), dy.data(), dparams.data());
    mhc_read_backward(p, x.data(), r_u.data(), rows, c, dx.data(), dparams.data());
    expect_gradient("mhc dx", x, dx, loss);
    expect_gradient("mhc dy", y, dy, loss);
    expect_gradient("mhc dparams", packed, dparams, loss, 1e-3);
  }
}

TEST_F(TrainOps, LossGradientsWithEntropyTerm) {
  const std::int64_t n = 4, v = 11;
  auto z = random_vector(n * v, rng, 2.0f);
  const std::vector<std::int32_t> targets = {3, 0, 10, 7};
  std::vector<float> dz(z.size()), scratch(z.size());
  for (double w : {0.0, 0.3}) {
    auto loss = [&] {
      return loss_forward_backward(pool, z.data(), targets, v, w, 1.0f, scratch.data()).loss;
    };
    const LossStats s = loss_forward_backward(pool, z.data(), targets, v, w, 1.0f, dz.data());
    EXPECT_NEAR(s.loss, s.ce - w * s.entropy, 1e-12);
    EXPECT_GT(s.entropy, 0.0);
    EXPECT_LT(s.entropy, std::log(11.0) + 1e-9);
    expect_gradient("loss dz", z, dz, loss, 1e-3, 1e-3);
  }
}

TEST_F(TrainOps, Bf16GemmTracksFp32WithinBf16Rounding) {
  if (!cpu_info().features.avx512bf16) {
    GTEST_SKIP() << "this CPU lacks AVX512_BF16; the trainer uses fp32 GEMMs here";
  }
  // Every transpose combination, overwrite and accumulate, split over the pool.
  const std::int64_t m = 37, n = 29, k = 70;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (bool acc : {false, true}) {
        auto a = random_vector(m * k, rng), b = random_vector(k * n, rng);
        auto c32 = random_vector(m * n, rng);
        auto c16 = c32;
        const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
        gemm(pool, ta, tb, m, n, k, a.data(), lda, b.data(), ldb, c32.data(), n, acc,
             GemmPrecision::kF32);
        gemm(pool, ta, tb, m, n, k, a.data(), lda, b.data(), ldb, c16.data(), n, acc,
             GemmPrecision::kBf16);
        for (std::int64_t i = 0; i < m; ++i) {
          for (std::int64_t j = 0; j < n; ++j) {
            double want = 0.0, magnitude = 0.0;
            for (std::int64_t l = 0; l < k; ++l) {
              const double p = static_cast<double>(ta ? a[l * lda + i] : a[i * lda + l]) *
                               (tb ? b[j * ldb + l] : b[l * ldb + j]);
              want += p;
              magnitude += std::fabs(p);
            }
            const float got32 = c32[i * n + j], got16 = c16[i * n + j];
            // fp32: exact to rounding; bf16 (8 significant bits) rounds each factor by at most 2^-8
            // relative, so each product moves by at most ~2^-7 of its size.
            if (!acc) {
              EXPECT_NEAR(got32, want, 1e-3) << ta << tb << acc;
            }
            EXPECT_NEAR(got16, got32, magnitude / 128 + 1e-4) << ta << tb << acc;
          }
        }
      }
    }
  }
}

// With bf16 GEMMs the input is quantized and rounded in one pass (AVX512_BF16 CPUs): the same
// int8 codes and scales as the packed kernels' quantizer, and x_hat the dequantized codes rounded
// to bf16, bit for bit — for widths with and without a 16-lane tail, zero rows, NaNs and
// infinities.
TEST_F(TrainOps, QuantizeInputInBf16EqualsQuantizingThenRounding) {
  if (!cpu_info().features.avx512bf16) GTEST_SKIP() << "bf16 GEMMs need AVX512_BF16";
  for (const std::int64_t in : {16, 37, 256, 300}) {
    const std::int64_t n = 9;
    auto x = random_vector(n * in, rng, 3.0f);
    std::fill_n(x.begin() + in, in, 0.0f);  // row 1: all zero
    x[2 * in + 5] = std::numeric_limits<float>::quiet_NaN();
    x[3 * in + in - 1] = -std::numeric_limits<float>::quiet_NaN();  // in the tail
    x[4 * in + 1] = std::numeric_limits<float>::infinity();
    x[5 * in + in / 2] = 1e-30f;  // tiny values beside
    x[6 * in] = -1e6f;
    kernels::PackedActivations want, got;
    kernels::pack_activations(x.data(), n, in, want, pool);
    GemmInput x16;
    quantize_input(pool, x.data(), n, in, got, x16, GemmPrecision::kBf16);
    ASSERT_EQ(got.tokens, want.tokens);
    ASSERT_EQ(got.cols_padded, want.cols_padded);
    EXPECT_TRUE(std::equal(want.q.data(), want.q.data() + n * want.cols_padded, got.q.data()))
        << "width " << in;
    ASSERT_EQ(got.scales.size(), want.scales.size());
    for (std::size_t r = 0; r < want.scales.size(); ++r) {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(got.scales[r]),
                std::bit_cast<std::uint32_t>(want.scales[r]))
          << "width " << in << " row " << r;
    }
    ASSERT_EQ(got.sums, want.sums) << "width " << in;
    std::vector<float> dequant(n * in);
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t i = 0; i < in; ++i) {
        dequant[r * in + i] = static_cast<float>(want.token(r)[i]) * want.scales[r];
      }
    }
    std::vector<std::uint16_t> want16(n * in);
    kernels::to_bf16(dequant.data(), n, in, in, want16.data());
    ASSERT_TRUE(x16.f32.empty());
    ASSERT_EQ(x16.bf16.size(), want16.size());
    EXPECT_TRUE(std::equal(want16.begin(), want16.end(), x16.bf16.begin())) << "width " << in;
  }
}

TEST_F(TrainOps, TernaryLinearIsExactAndItsBackwardIsStraightThrough) {
  kernels::KernelOptions o;
  o.threads = 2;
  o.tune = kernels::TuneMode::kOff;
  o.tune_cache.clear();
  kernels::KernelContext ctx(o);
  const std::int64_t n = 3, in = 256, out = 40;
  auto w = random_vector(out * in, rng, 0.05f), x = random_vector(n * in, rng);
  auto dy = random_vector(n * out, rng);
  {
    TernaryLinear layer;
    ternary_prepare(ctx, w.data(), out, in, layer);
    EXPECT_EQ(layer.scale, fp16_to_fp32(fp32_to_fp16(layer.scale)));  // what the file stores
    kernels::PackedActivations acts;
    GemmInput x_in;
    std::vector<float> y(n * out);
    quantize_input(ctx.pool(), x.data(), n, in, acts, x_in);
    const std::vector<float>& x_hat = x_in.f32;
    ternary_forward(ctx, layer, acts, y.data());
    // Forward: the int32 sum of trits times int8 codes, scaled — the inference rule.
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t o2 = 0; o2 < out; ++o2) {
        std::int64_t acc = 0;
        for (std::int64_t i = 0; i < in; ++i) {
          acc += layer.trits[o2 * in + i] * static_cast<std::int64_t>(acts.token(r)[i]);
        }
        const float want = static_cast<float>(acc) * layer.scale * acts.scales[r];
        EXPECT_NEAR(y[r * out + o2], want, 1e-5f * std::max(1.0f, std::fabs(want)));
      }
    }
    // Backward: d_x = d_y W_q, d_W = d_y^T x_hat; an accumulating call adds.
    std::vector<float> dx(n * in), dx2(n * in, 1.0f), dw(out * in, 0.0f);
    ternary_backward(ctx.pool(), layer, x_in, dy.data(), n, dx.data(), false, dw.data());
    ternary_backward(ctx.pool(), layer, x_in, dy.data(), n, dx2.data(), true, dw.data());
    double err2 = 0, ref2 = 0;
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t i = 0; i < in; ++i) {
        double want = 0;
        for (std::int64_t o2 = 0; o2 < out; ++o2) {
          want += dy[r * out + o2] * layer.trits[o2 * in + i] * static_cast<double>(layer.scale);
        }
        EXPECT_NEAR(dx[r * in + i], want, 1e-4);
        EXPECT_NEAR(dx2[r * in + i], 1.0 + dx[r * in + i], 1e-5);
        err2 += (dx[r * in + i] - want) * (dx[r * in + i] - want);
        ref2 += want * want;
      }
    }
    EXPECT_LT(std::sqrt(err2 / ref2), 1e-6);
    for (std::int64_t o2 = 0; o2 < out; o2 += 7) {
      for (std::int64_t i = 0; i < in; i += 13) {
        double want = 0;
        for (std::int64_t r = 0; r < n; ++r) want += dy[r * out + o2] * x_hat[r * in + i];
        EXPECT_NEAR(dw[o2 * in + i], 2 * want, 1e-4);  // two backward calls accumulated
      }
    }
    // The same backward with bf16 GEMMs (weights, inputs and d_y each rounded once): within
    // bf16 rounding (2^-8 per factor) of the fp32 results.
    if (cpu_info().features.avx512bf16) {
      TernaryLinear layer16;
      ternary_prepare(ctx, w.data(), out, in, layer16, GemmPrecision::kBf16);
      // The bf16 weights are the fp32 ones rounded, bit for bit (built from the trits directly).
      std::vector<std::uint16_t> want16(layer.dequant.size());
      kernels::to_bf16(layer.dequant.data(), out, in, in, want16.data());
      ASSERT_EQ(layer16.dequant16, want16);
      GemmInput x16;
      quantize_input(ctx.pool(), x.data(), n, in, acts, x16, GemmPrecision::kBf16);
      ASSERT_TRUE(x16.f32.empty());
      ASSERT_EQ(x16.bf16.size(), static_cast<std::size_t>(n * in));
      std::vector<float> dx16(n * in), dw16(out * in, 0.0f);
      ternary_backward(ctx.pool(), layer16, x16, dy.data(), n, dx16.data(), false, dw16.data(),
                       GemmPrecision::kBf16);
      for (std::int64_t r = 0; r < n; ++r) {
        for (std::int64_t i = 0; i < in; ++i) {
          double magnitude = 0;
          for (std::int64_t o2 = 0; o2 < out; ++o2) {
            magnitude += std::fabs(dy[r * out + o2] * layer.dequant[o2 * in + i]);
          }
          EXPECT_NEAR(dx16[r * in + i], dx[r * in + i], magnitude / 128 + 1e-6);
        }
      }
      for (std::int64_t o2 = 0; o2 < out; ++o2) {
        for (std::int64_t i = 0; i < in; ++i) {
          double magnitude = 0;
          for (std::int64_t r = 0; r < n; ++r) {
            magnitude += std::fabs(dy[r * out + o2] * x_hat[r * in + i]);
          }
          EXPECT_NEAR(dw16[o2 * in + i], dw[o2 * in + i] / 2, magnitude / 128 + 1e-6);
        }
      }
    }
  }
}

}  // namespace
}  // namespace nanochat::train
