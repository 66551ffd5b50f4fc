#include "nanochat/mhc/mhc.hpp"

#include <algorithm>
#include <cmath>

#include "nanochat/util/error.hpp"

namespace nanochat::mhc {

const std::array<std::array<int, 4>, 24>& permutations4() {
  static const std::array<std::array<int, 4>, 24> perms = [] {
    std::array<std::array<int, 4>, 24> out{};
    std::array<int, 4> p = {0, 1, 2, 3};
    for (auto& slot : out) {
      slot = p;
      std::next_permutation(p.begin(), p.end());
    }
    return out;
  }();
  return perms;
}

MhcParams MhcParams::identity(int n) {
  MhcParams p;
  p.n = n;
  p.h_pre.assign(static_cast<std::size_t>(n), 1.0f / static_cast<float>(n));
  p.h_post.assign(static_cast<std::size_t>(n), 1.0f);
  if (n == 2) p.res_logits = {4.0f};  // a = sigmoid(4) ~ 0.982
  if (n == 4) {
    p.res_logits.assign(24, 0.0f);
    p.res_logits[0] = 6.0f;  // the identity permutation dominates
  }
  p.validate();
  return p;
}

void MhcParams::validate() const {
  if (n != 1 && n != 2 && n != 4) fail("mHC-lite supports 1, 2 or 4 streams, not {}", n);
  const std::size_t want_logits = logit_count(n);
  if (h_pre.size() != static_cast<std::size_t>(n) || h_post.size() != static_cast<std::size_t>(n) ||
      res_logits.size() != want_logits) {
    fail("mHC-lite with {} streams needs {} h_pre, {} h_post and {} mixing logits; got {}, {}, {}",
         n, n, n, want_logits, h_pre.size(), h_post.size(), res_logits.size());
  }
  for (float v : h_pre) {
    if (!std::isfinite(v)) fail("mHC-lite h_pre holds a non-finite value");
  }
  for (float v : h_post) {
    if (!std::isfinite(v)) fail("mHC-lite h_post holds a non-finite value");
  }
  for (float v : res_logits) {
    if (!std::isfinite(v)) fail("mHC-lite mixing logits hold a non-finite value");
  }
}

std::size_t logit_count(int n) { return n == 1 ? 0 : (n == 2 ? 1 : 24); }

PackedLayout packed_layout(int n) {
  const auto streams = static_cast<std::size_t>(n);
  PackedLayout l;
  l.h_post = streams;
  l.logits = 2 * streams;
  l.size = n == 1 ? 0 : l.logits + logit_count(n);
  return l;
}

MhcParams unpack(std::span<const float> packed, int n) {
  if (n == 1 && packed.empty()) return MhcParams::identity(1);
  const PackedLayout l = packed_layout(n);
  if (packed.size() != l.size) {
    fail("mHC-lite with {} streams packs {} parameters, not {}", n, l.size, packed.size());
  }
  MhcParams p;
  p.n = n;
  p.h_pre.assign(packed.begin(), packed.begin() + static_cast<std::ptrdiff_t>(l.h_post));
  p.h_post.assign(packed.begin() + static_cast<std::ptrdiff_t>(l.h_post),
                  packed.begin() + static_cast<std::ptrdiff_t>(l.logits));
  p.res_logits.assign(packed.begin() + static_cast<std::ptrdiff_t>(l.logits), packed.end());
  p.validate();
  return p;
}

std::vector<float> pack(const MhcParams& p) {
  std::vector<float> out;
  if (p.n == 1) return out;
  out.reserve(packed_layout(p.n).size);
  out.insert(out.end(), p.h_pre.begin(), p.h_pre.end());
  out.insert(out.end(), p.h_post.begin(), p.h_post.end());
  out.insert(out.end(), p.res_logits.begin(), p.res_logits.end());
  return out;
}

std::vector<float> residual_matrix(const MhcParams& p) {
  p.validate();
  const auto n = static_cast<std::size_t>(p.n);
  std::vector<double> h(n * n, 0.0);
  if (p.n == 1) {
    h[0] = 1.0;
  } else if (p.n == 2) {
    const double a = 1.0 / (1.0 + std::exp(-static_cast<double>(p.res_logits[0])));
    h = {a, 1.0 - a, 1.0 - a, a};
  } else {
    const double top = *std::max_element(p.res_logits.begin(), p.res_logits.end());
    std::array<double, 24> w{};
    double sum = 0;
    for (std::size_t k = 0; k < 24; ++k) {
      w[k] = std::exp(static_cast<double>(p.res_logits[k]) - top);
      sum += w[k];
    }
    const auto& perms = permutations4();
    for (std::size_t k = 0; k < 24; ++k) {
      for (std::size_t i = 0; i < 4; ++i) {
        h[i * 4 + static_cast<std::size_t>(perms[k][i])] += w[k] / sum;
      }
    }
  }
  return std::vector<float>(h.begin(), h.end());
}

StochasticCheck check_doubly_stochastic(std::span<const float> h, int n) {
  StochasticCheck c;
  const auto m = static_cast<std::size_t>(n);
  for (std::size_t i = 0; i < m; ++i) {
    double row = 0, col = 0;
    for (std::size_t j = 0; j < m; ++j) {
      row += h[i * m + j];
      col += h[j * m + i];
      if (h[i * m + j] < 0) c.non_negative = false;
    }
    c.max_deviation = std::max({c.max_deviation, std::fabs(row - 1.0), std::fabs(col - 1.0)});
  }
  return c;
}

double composite_gain(std::span<const MhcParams> layers, double tol) {
  if (layers.empty()) return 1.0;
  const auto n = static_cast<std::size_t>(layers[0].n);
  std::vector<double> product(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i) product[i * n + i] = 1.0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (static_cast<std::size_t>(layers[l].n) != n) {
      fail("mHC-lite layer {} has {} streams, layer 0 has {}", l, layers[l].n, n);
    }
    const std::vector<float> h = residual_matrix(layers[l]);
    const StochasticCheck c = check_doubly_stochastic(h, layers[l].n);
    if (!c.ok(tol)) {
      fail(
          "mHC-lite layer {}: the mixing matrix is not doubly stochastic (rows or columns off "
          "by {:.3g}{})",
          l, c.max_deviation, c.non_negative ? "" : ", negative entries");
    }
    std::vector<double> next(n * n, 0.0);  // H_l * product
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < n; ++k)
        for (std::size_t j = 0; j < n; ++j) next[i * n + j] += h[i * n + k] * product[k * n + j];
    product = std::move(next);
  }
  double gain = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double row = 0;
    for (std::size_t j = 0; j < n; ++j) row += std::fabs(product[i * n + j]);
    gain = std::max(gain, row);
  }
  if (gain > 1.0 + tol) {
    fail("mHC-lite composite residual gain {:.6f} across {} layers exceeds 1", gain, layers.size());
  }
  return gain;
}

void read(const MhcParams& p, std::span<const float> x, std::size_t width, std::span<float> u) {
  std::fill(u.begin(), u.begin() + static_cast<std::ptrdiff_t>(width), 0.0f);
  for (std::size_t j = 0; j < static_cast<std::size_t>(p.n); ++j) {
    const float w = p.h_pre[j];
    const float* xj = x.data() + j * width;
    for (std::size_t d = 0; d < width; ++d) u[d] += w * xj[d];
  }
}

void write(const MhcParams& p, std::span<const float> h, std::span<float> x, std::size_t width,
           std::span<const float> y) {
  const auto n = static_cast<std::size_t>(p.n);
  thread_local std::vector<float> mixed;  // kept: a decoded token calls this twice per layer
  mixed.assign(n * width, 0.0f);
  for (std::size_t i = 0; i < n; ++i) {
    float* out = mixed.data() + i * width;
    for (std::size_t j = 0; j < n; ++j) {
      const float w = h[i * n + j];
      const float* xj = x.data() + j * width;
      for (std::size_t d = 0; d < width; ++d) out[d] += w * xj[d];
    }
    const float post = p.h_post[i];
    for (std::size_t d = 0; d < width; ++d) out[d] += post * y[d];
  }
  std::copy_n(mixed.begin(), n * width, x.begin());
}

}  // namespace nanochat::mhc
