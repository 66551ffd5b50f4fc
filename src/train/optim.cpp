#include "nanochat/train/optim.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <numbers>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/kernels/vec.hpp"

namespace nanochat::train {
namespace {

std::size_t sz(std::int64_t v) { return static_cast<std::size_t>(v); }

constexpr float kMuonMomentum = 0.95f;
constexpr float kAdamBeta1 = 0.9f, kAdamBeta2 = 0.95f, kAdamEps = 1e-8f;
constexpr float kLionBeta1 = 0.9f, kLionBeta2 = 0.99f;

}  // namespace

double lr_multiplier(const TrainingSection& t, std::int64_t step) {
  if (step < t.warmup_steps) {
    return static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  }
  const double floor = t.min_lr_fraction;
  if (t.schedule == Schedule::kWsd) {
    const auto decay_steps =
        static_cast<std::int64_t>(std::ceil(t.decay_fraction * static_cast<double>(t.total_steps)));
    const std::int64_t decay_start = std::max(t.warmup_steps, t.total_steps - decay_steps);
    if (step < decay_start || decay_steps == 0) return 1.0;
    const double left = static_cast<double>(t.total_steps - step) /
                        static_cast<double>(t.total_steps - decay_start);
    return floor + (1.0 - floor) * std::clamp(left, 0.0, 1.0);
  }
  const double progress =
      static_cast<double>(step - t.warmup_steps) /
      static_cast<double>(std::max<std::int64_t>(1, t.total_steps - t.warmup_steps));
  return floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(1.0, progress)));
}

double clip_gradients(std::vector<Param>& params, double max_norm) {
  double ss = 0;
  for (const auto& p : params) {
    ss += kernels::sum_squares(p.grad.data(), static_cast<std::int64_t>(p.grad.size()));
  }
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const auto scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& p : params) {
      for (auto& g : p.grad) g *= scale;
    }
  }
  return norm;
}

void newton_schulz5(ThreadPool& pool, std::vector<float>& g, std::int64_t rows, std::int64_t cols,
                    GemmPrecision precision) {
  // The Gram matrix on the short side: X X^T (rows x rows) for a wide matrix, X^T X (cols x cols)
  // for a tall one, whose polynomial then multiplies X from the right (X (X^T X) = (X X^T) X).
  const bool tall = rows > cols;
  const std::int64_t r = tall ? cols : rows;
  const auto n = static_cast<std::int64_t>(g.size());
  // Scratch kept between calls: every step orthogonalizes every matrix, and fresh large vectors
  // would cost page faults each time.
  thread_local std::vector<float> gram, gram2, next;
  float* x = g.data();
  const double ss = kernels::sum_squares(x, n);
  kernels::axpby_f32(static_cast<float>(1.0 / (std::sqrt(ss) + 1e-7)), x, 0.0f, x, n);
  // Quintic coefficients that push every singular value towards 1 quickly (Jordan et al.).
  constexpr float a = 3.4445f, b = -4.7750f, cc = 2.0315f;
  gram.resize(sz(r * r));
  gram2.resize(sz(r * r));
  next.resize(g.size());
  // The Gram matrix and its square are symmetric: two diagonal blocks and one off-diagonal block
  // are computed, the other mirrored (three quarters of the flops). block(i0, j0, m, n, c) fills
  // the m x n block of the r x r result at (i0, j0) through c.
  const auto symmetric = [&](float* c, const auto& block) {
    const std::int64_t h = r / 2;
    if (r < 64) {
      block(0, 0, r, r, c);
      return;
    }
    block(0, 0, h, h, c);
    block(0, h, h, r - h, c + h);
    block(h, h, r - h, r - h, c + h * r + h);
    for (std::int64_t i = h; i < r; ++i) {
      for (std::int64_t j = 0; j < h; ++j) c[i * r + j] = c[j * r + i];
    }
  };
  if (precision == GemmPrecision::kBf16) {
    // Each operand rounded once per iteration (X, G and the polynomial), not once per product.
    thread_local std::vector<std::uint16_t> x16, gram16, poly16;
    for (int it = 0; it < 5; ++it) {
      round_to_bf16(pool, x, rows, cols, x16);
      symmetric(gram.data(),
                [&](std::int64_t i0, std::int64_t j0, std::int64_t m, std::int64_t nn, float* c) {
                  if (tall) {  // X^T X
                    gemm_rounded(pool, true, false, m, nn, rows, x16.data() + i0, cols,
                                 x16.data() + j0, cols, c, r, false);
                  } else {  // X X^T
                    gemm_rounded(pool, false, true, m, nn, cols, x16.data() + i0 * cols, cols,
                                 x16.data() + j0 * cols, cols, c, r, false);
                  }
                });
      round_to_bf16(pool, gram.data(), r, r, gram16);
      symmetric(gram2.data(), [&](std::int64_t i0, std::int64_t j0, std::int64_t m, std::int64_t nn,
                                  float* c) {  // G G
        gemm_rounded(pool, false, false, m, nn, r, gram16.data() + i0 * r, r, gram16.data() + j0, r,
                     c, r, false);
      });
      kernels::axpby_f32(cc, gram2.data(), b, gram.data(), r * r);  // b G + c G^2
      round_to_bf16(pool, gram.data(), r, r, poly16);
      if (tall) {  // X B
        gemm_rounded(pool, false, false, rows, cols, cols, x16.data(), cols, poly16.data(), r,
                     next.data(), cols, false);
      } else {  // B X
        gemm_rounded(pool, false, false, rows, cols, rows, poly16.data(), r, x16.data(), cols,
                     next.data(), cols, false);
      }
      kernels::axpby_f32(1.0f, next.data(), a, x, n);  // a X + next
    }
    return;
  }
  for (int it = 0; it < 5; ++it) {
    symmetric(gram.data(), [&](std::int64_t i0, std::int64_t j0, std::int64_t m, std::int64_t nn,
                               float* c) {
      if (tall) {  // X^T X
        gemm(pool, true, false, m, nn, rows, x + i0, cols, x + j0, cols, c, r, false, precision);
      } else {  // X X^T
        gemm(pool, false, true, m, nn, cols, x + i0 * cols, cols, x + j0 * cols, cols, c, r, false,
             precision);
      }
    });
    symmetric(gram2.data(), [&](std::int64_t i0, std::int64_t j0, std::int64_t m, std::int64_t nn,
                                float* c) {  // G G
      gemm(pool, false, false, m, nn, r, gram.data() + i0 * r, r, gram.data() + j0, r, c, r, false,
           precision);
    });
    kernels::axpby_f32(cc, gram2.data(), b, gram.data(), r * r);  // b G + c G^2
    if (tall) {                                                   // X B
      gemm(pool, false, false, rows, cols, cols, x, cols, gram.data(), r, next.data(), cols, false,
           precision);
    } else {  // B X
      gemm(pool, false, false, rows, cols, rows, gram.data(), r, x, cols, next.data(), cols, false,
           precision);
    }
    kernels::axpby_f32(1.0f, next.data(), a, x, n);  // a X + next
  }
}

Optimizer::Optimizer(const TrainingSection& t, const std::vector<Param>& params)
    : t_(t), precision_(parse_gemm_precision(t.matmul_precision)) {
  for (const auto& p : params) {
    m_.emplace_back(p.size(), 0.0f);
    const bool adam = !p.matrix && t.optimizer == ScalarOptimizer::kAdamW;
    v_.emplace_back(adam ? p.size() : 0, 0.0f);
    names_.push_back(p.name);
  }
}

std::vector<Optimizer::Slot> Optimizer::slots() {
  std::vector<Slot> s;
  for (std::size_t i = 0; i < m_.size(); ++i) {
    s.push_back({names_[i] + ".m", &m_[i]});
    if (!v_[i].empty()) s.push_back({names_[i] + ".v", &v_[i]});
  }
  return s;
}

namespace {

// Runs fn(begin, end) over [0, n): on the pool for large tensors, inline for small ones (a
// norm's weights are not worth a dispatch). Every element's update is independent of the split.
template <typename Fn>
void elementwise(ThreadPool& pool, std::size_t n, Fn&& fn) {
  constexpr std::size_t kMinParallel = 1 << 15;
  if (n < kMinParallel) {
    fn(std::size_t{0}, n);
    return;
  }
  pool.parallel_for(static_cast<std::int64_t>(n), [&](std::int64_t begin, std::int64_t end) {
    fn(static_cast<std::size_t>(begin), static_cast<std::size_t>(end));
  });
}

}  // namespace

void Optimizer::muon_update(ThreadPool& pool, Param& p, std::vector<float>& m,
                            double lr_scale) const {
  // Nesterov momentum, orthogonalized, scaled for non-square shapes.
  const float wd = p.decay ? static_cast<float>(t_.weight_decay) : 0.0f;
  const auto lr = static_cast<float>(t_.muon_lr * lr_scale);
  thread_local std::vector<float> u;  // kept between matrices and steps
  u.resize(p.size());
  elementwise(pool, p.size(), [&](std::size_t begin, std::size_t end) {
    for (std::size_t j = begin; j < end; ++j) {
      m[j] = kMuonMomentum * m[j] + p.grad[j];
      u[j] = p.grad[j] + kMuonMomentum * m[j];
    }
  });
  const std::int64_t rows = p.shape[0], cols = p.shape[1];
  newton_schulz5(pool, u, rows, cols, precision_);
  const auto shape_scale = static_cast<float>(
      std::sqrt(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols))));
  elementwise(pool, p.size(), [&](std::size_t begin, std::size_t end) {
    for (std::size_t j = begin; j < end; ++j) {
      p.value[j] = p.value[j] * (1.0f - lr * wd) - lr * shape_scale * u[j];
    }
  });
}

void Optimizer::step(ThreadPool& pool, std::vector<Param>& params, double lr_scale) {
  ++steps_;
  const auto step = static_cast<double>(steps_);
  // Muon's matrices. Newton-Schulz is a chain of small GEMMs that a second thread barely speeds
  // up when it splits each one, so with at least two matrices per thread every thread takes
  // whole matrices instead (largest first, each with a pool of its own thread). A matrix's
  // update is then the same whatever the thread count.
  std::vector<std::size_t> muon;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].matrix) muon.push_back(i);
  }
  std::stable_sort(muon.begin(), muon.end(), [&](std::size_t a, std::size_t b) {
    return params[a].size() > params[b].size();
  });
  const auto threads = static_cast<std::size_t>(pool.size());
  if (threads > 1 && muon.size() >= 2 * threads) {
    while (serial_.size() < threads) serial_.push_back(std::make_unique<ThreadPool>(1));
    std::atomic<std::size_t> next{0};
    pool.run([&](int worker) {
      for (std::size_t k = next.fetch_add(1); k < muon.size(); k = next.fetch_add(1)) {
        muon_update(*serial_[static_cast<std::size_t>(worker)], params[muon[k]], m_[muon[k]],
                    lr_scale);
      }
    });
  } else {
    for (const std::size_t i : muon) muon_update(pool, params[i], m_[i], lr_scale);
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    Param& p = params[i];
    std::vector<float>& m = m_[i];
    const float wd = p.decay ? static_cast<float>(t_.weight_decay) : 0.0f;
    if (p.matrix) {
      continue;  // updated above
    } else if (t_.optimizer == ScalarOptimizer::kAdamW) {
      const auto lr = static_cast<float>(t_.adamw_lr * lr_scale);
      std::vector<float>& v = v_[i];
      const auto c1 = static_cast<float>(1.0 - std::pow(kAdamBeta1, step));
      const auto c2 = static_cast<float>(1.0 - std::pow(kAdamBeta2, step));
      elementwise(pool, p.size(), [&](std::size_t begin, std::size_t end) {
        for (std::size_t j = begin; j < end; ++j) {
          const float g = p.grad[j];
          m[j] = kAdamBeta1 * m[j] + (1.0f - kAdamBeta1) * g;
          v[j] = kAdamBeta2 * v[j] + (1.0f - kAdamBeta2) * g * g;
          const float update = (m[j] / c1) / (std::sqrt(v[j] / c2) + kAdamEps);
          p.value[j] = p.value[j] * (1.0f - lr * wd) - lr * update;
        }
      });
    } else {
      // Lion: the sign of an interpolated momentum.
      const auto lr = static_cast<float>(t_.lion_lr * lr_scale);
      elementwise(pool, p.size(), [&](std::size_t begin, std::size_t end) {
        for (std::size_t j = begin; j < end; ++j) {
          const float g = p.grad[j];
          const float c = kLionBeta1 * m[j] + (1.0f - kLionBeta1) * g;
          const float update = c > 0 ? 1.0f : (c < 0 ? -1.0f : 0.0f);
          p.value[j] = p.value[j] * (1.0f - lr * wd) - lr * update;
          m[j] = kLionBeta2 * m[j] + (1.0f - kLionBeta2) * g;
        }
      });
    }
  }
}

}  // namespace nanochat::train
