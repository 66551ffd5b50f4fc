// mHC-lite residual mixing (DESIGN.md, "Math"). The residual stream is widened to n streams
// (n = 1, 2 or 4), each of width d. Around every sub-layer f (attention or FFN):
//
//   u     = sum_j h_pre[j] * x_j                      read:  (d)
//   y     = f(u)                                      the sub-layer
//   x'_i  = sum_j H_res[i][j] * x_j + h_post[i] * y   write: mix the streams, add the output
//
// H_res is a convex combination of permutation matrices, hence exactly doubly stochastic with
// no Sinkhorn iterations: n = 2: H = a I + (1 - a) swap with a = sigmoid(logit); n = 4: softmax
// weights over the 24 permutations of 4 streams. n = 1 is the plain residual (H = [1]).
// Parameters are fp32. Doubly stochastic matrices have every row and column summing to 1, so
// products of them (the composite mixing across layers) keep that property: the residual
// path's gain cannot grow with depth.
//
// Thread-safety: plain functions over caller-owned data.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace nanochat::mhc {

// The 24 permutations of {0,1,2,3} in lexicographic order; permutation k maps stream i to
// perms[k][i] (row i of P_k has its 1 in column perms[k][i]).
const std::array<std::array<int, 4>, 24>& permutations4();

struct MhcParams {
  int n = 1;
  std::vector<float> h_pre;       // n
  std::vector<float> h_post;      // n
  std::vector<float> res_logits;  // n = 1: none; n = 2: 1; n = 4: 24

  // Identity-like start: read the mean of the streams, write the output to every stream, keep
  // the streams where they are (H_res close to I).
  static MhcParams identity(int n);
  // Throws Error when n is not 1, 2 or 4 or a vector has the wrong length.
  void validate() const;
};

// The packed parameters of one sub-layer, as GGUF files (blk.N.attn_mhc.weight,
// blk.N.ffn_mhc.weight, F32) and the trainer store them: [h_pre (n) | h_post (n) | res_logits].
// n = 1 has no parameters and no tensor (size 0). The trainer's gradients use the same offsets.
struct PackedLayout {
  std::size_t h_pre = 0;  // offset of h_pre
  std::size_t h_post;     // offset of h_post
  std::size_t logits;     // offset of res_logits
  std::size_t size;       // floats in all
};
// Mixing logits for n streams: 0 (n = 1), 1 (n = 2) or 24 (n = 4, one per permutation).
std::size_t logit_count(int n);
PackedLayout packed_layout(int n);
// The parameters in `packed` (packed_layout(n).size floats; identity(1) for n = 1). Throws Error
// when the size is wrong or a value is not finite.
MhcParams unpack(std::span<const float> packed, int n);
std::vector<float> pack(const MhcParams& p);

// H_res as an n x n row-major matrix, computed in double and rounded once.
std::vector<float> residual_matrix(const MhcParams& p);

// Largest deviation of any row or column sum of the n x n matrix `h` from 1, and whether every
// entry is non-negative — a matrix is doubly stochastic within `tol` when
// max_deviation <= tol and all entries are >= 0.
struct StochasticCheck {
  double max_deviation = 0;
  bool non_negative = true;
  bool ok(double tol = 1e-6) const { return non_negative && max_deviation <= tol; }
};
StochasticCheck check_doubly_stochastic(std::span<const float> h, int n);

// The composite residual mixing of `layers` applied in order (H_L ... H_1) and its gain: the
// largest absolute row sum (infinity norm). For doubly stochastic factors it is 1; the check
// fails when it exceeds 1 + tol. Throws Error naming the first layer whose matrix is not doubly
// stochastic within tol.
double composite_gain(std::span<const MhcParams> layers, double tol = 1e-5);

// u[d] = sum_j h_pre[j] * x[j][d]; x is [n][width], u is [width].
void read(const MhcParams& p, std::span<const float> x, std::size_t width, std::span<float> u);

// x[i] = sum_j H[i][j] * x[j] + h_post[i] * y, in place; `h` from residual_matrix(p).
void write(const MhcParams& p, std::span<const float> h, std::span<float> x, std::size_t width,
           std::span<const float> y);

}  // namespace nanochat::mhc
