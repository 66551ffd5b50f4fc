#include "nanochat/train/ops.hpp"

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>

#include "nanochat/kernels/q8.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

// oneDNN runs on OpenMP (Debian builds it against libgomp, which it loads); nanochat itself is not
// an OpenMP program, so the one call it needs is declared weak and resolved from that library.
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace nanochat::train {
namespace {

std::size_t sz(std::int64_t v) { return static_cast<std::size_t>(v); }

// Our pool splits the work; oneDNN's OpenMP threads would compete with it, so each pool thread
// runs its GEMMs single-threaded (omp_set_num_threads sets the calling thread's own setting).
void single_threaded_blas() {
  thread_local bool done = false;
  if (!done) {
    if (omp_set_num_threads != nullptr) omp_set_num_threads(1);
    done = true;
  }
}

// Row-major C (m, n) = alpha op(A) op(B) + beta C through oneDNN's JIT sgemm (AVX-512 where
// the CPU has it).
void sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
           std::int64_t ldc) {
  single_threaded_blas();
  const dnnl_status_t st =
      dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) fail("oneDNN sgemm failed (status {})", static_cast<int>(st));
}

// Every extension round_rows_avx512bf16 is compiled for.
bool has_avx512bf16() {
  const CpuFeatures& f = cpu_info().features;
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16;
}

// fp32 -> bf16, nearest even, with the CPU's own instruction: the bf16 GEMMs only run on CPUs
// that have it. (It treats denormal inputs as zero, which a GEMM operand can afford.)
[[gnu::target("avx512f,avx512bw,avx512vl,avx512bf16")]] void round_rows_avx512bf16(
    const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::uint16_t* out) {
  const auto tail = static_cast<__mmask16>((1u << (cols % 16)) - 1u);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * ld;
    std::uint16_t* dst = out + r * cols;
    std::int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), reinterpret_cast<const __m256i&>(h));
    }
    if (tail != 0) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, src + j));
      _mm256_mask_storeu_epi16(dst + j, tail, reinterpret_cast<const __m256i&>(h));
    }
  }
}

// GCC 12's AVX-512 intrinsics start from an undefined register it then calls uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// One token's activations quantized as ternary::quantize_activations quantizes them (the same
// int8 codes, returning the same scale), and the dequantized values q * scale rounded to bf16 as
// round_rows_avx512bf16 rounds them, in one pass: the input of a ternary layer's forward and of
// its weight-gradient GEMM.
[[gnu::target("avx512f,avx512bw,avx512vl,avx512bf16")]] float quantize_row_bf16_avx512(
    const float* x, std::int64_t cols, std::int8_t* q, std::uint16_t* x16) {
  const std::int64_t full = cols / 16 * 16;
  const auto tail = static_cast<__mmask16>((1u << (cols % 16)) - 1u);
  __m512 lanes = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < full; i += 16) {  // max_ps(a, lanes) passes over a NaN in a
    lanes = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), lanes);
  }
  if (tail != 0) {
    lanes = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x + full)), lanes);
  }
  alignas(64) float lane[16];
  _mm512_store_ps(lane, lanes);
  float amax = ternary::kScaleEps;
  for (const float l : lane) amax = std::max(amax, l);
  const float scale = amax / 127.0f;
  const __m512 mul = _mm512_set1_ps(127.0f / amax), s = _mm512_set1_ps(scale);
  const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
  for (std::int64_t i = 0; i < cols; i += 16) {
    const __mmask16 m = i < full ? static_cast<__mmask16>(0xffff) : tail;
    // min/max send a NaN product to -128; the conversion rounds to nearest even.
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), mul);
    const __m512i codes = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
    _mm_mask_storeu_epi8(q + i, m, _mm512_cvtsepi32_epi8(codes));
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_cvtepi32_ps(codes), s));
    _mm256_mask_storeu_epi16(x16 + i, m, reinterpret_cast<const __m256i&>(h));
  }
  return scale;
}
#pragma GCC diagnostic pop

void round_rows(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                std::uint16_t* out) {
  static const bool native = has_avx512bf16();
  if (native) {
    round_rows_avx512bf16(x, rows, cols, ld, out);
  } else {
    kernels::to_bf16(x, rows, cols, ld, out);
  }
}

// dst = src x weights through oneDNN's matmul on the calling thread (oneDNN only reads the
// inputs). Primitives are built once per key (`sum_into_dst`: accumulate into dst, a sum post-op)
// and kept per thread, with the thread's engine and stream.
void run_matmul(const dnnl::memory::desc& a_md, const void* a, const dnnl::memory::desc& b_md,
                const void* b, const dnnl::memory::desc& c_md, void* c, bool sum_into_dst) {
  single_threaded_blas();
  thread_local dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  thread_local dnnl::stream stream(engine);
  thread_local std::map<std::vector<std::int64_t>, dnnl::matmul> cache;
  std::vector<std::int64_t> key{sum_into_dst ? 1 : 0};  // each operand: type, shape, strides
  for (const auto* md : {&a_md, &b_md, &c_md}) {
    const auto& blocking = md->data.format_desc.blocking;
    key.insert(key.end(), {static_cast<std::int64_t>(md->data.data_type), md->data.dims[0],
                           md->data.dims[1], blocking.strides[0], blocking.strides[1]});
  }
  auto it = cache.find(key);
  if (it == cache.end()) {
    dnnl::primitive_attr attr;
    if (sum_into_dst) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::desc desc(a_md, b_md, c_md);
    it = cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine))).first;
  }
  dnnl::memory am(a_md, engine, const_cast<void*>(a));
  dnnl::memory bm(b_md, engine, const_cast<void*>(b));
  dnnl::memory cm(c_md, engine, c);
  it->second.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  stream.wait();
}

// The same product with bf16 operands and fp32 accumulation, through oneDNN's matmul
// (AVX512_BF16 kernels). A (m, k), or (k, m) when transposed, with row stride lda; B densely
// packed in its stored orientation: (k, n), or (n, k) when transposed. A transposed operand
// keeps its stored orientation and is described by strides.
void gemm_bf16(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k,
               const std::uint16_t* a16, std::int64_t lda, const std::uint16_t* b16,
               std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  using dnnl::memory;
  run_matmul(memory::desc({m, k}, memory::data_type::bf16,
                          ta ? memory::dims{1, lda} : memory::dims{lda, 1}),
             a16,
             memory::desc({k, n}, memory::data_type::bf16,
                          tb ? memory::dims{1, ldb} : memory::dims{ldb, 1}),
             b16, memory::desc({m, n}, memory::data_type::f32, memory::dims{ldc, 1}), c,
             beta != 0.0f);
}

// C (m, n) int32 = A (m, k) int8, row stride lda, times B^T for B (n, k) int8 dense: exact sums,
// through oneDNN's matmul (its VNNI kernels).
void gemm_s8(std::int64_t m, std::int64_t n, std::int64_t k, const std::int8_t* a, std::int64_t lda,
             const std::int8_t* b, std::int32_t* c) {
  using dnnl::memory;
  run_matmul(memory::desc({m, k}, memory::data_type::s8, memory::dims{lda, 1}), a,
             memory::desc({k, n}, memory::data_type::s8, memory::dims{1, k}), b,
             memory::desc({m, n}, memory::data_type::s32, memory::dims{n, 1}), c, false);
}

// Whether the ternary forward runs through oneDNN's int8 matmul instead of the packed kernels:
// on CPUs with AVX512_VNNI, when the kernels would take their AVX-512 path anyway (a path forced
// with --isa keeps the packed kernels). The int32 sums are exact either way, so the results are
// the same bits.
bool int8_through_onednn(const kernels::KernelContext& ctx) {
  static const bool vnni = cpu_info().features.avx512vnni && cpu_info().features.avx512bw;
  return vnni && ctx.isa() == kernels::Isa::kAvx512;
}

// x (rows, cols) with row stride ld, rounded to bf16 densely into the first rows * cols entries
// of `out`; split over the pool when one is given. `out` only grows: scratch shared by operands
// of several sizes would otherwise be zero-filled again each time it grows back.
void round_matrix(ThreadPool* pool, const float* x, std::int64_t rows, std::int64_t cols,
                  std::int64_t ld, std::vector<std::uint16_t>& out) {
  if (out.size() < sz(rows * cols)) out.resize(sz(rows * cols));
  std::uint16_t* dst = out.data();  // `out` may be a thread_local of the calling thread
  const auto run = [&](std::int64_t begin, std::int64_t end) {
    round_rows(x + begin * ld, end - begin, cols, ld, dst + begin * cols);
  };
  if (pool != nullptr) {
    pool->parallel_for(rows, run);
  } else {
    run(0, rows);
  }
}

// An operand op(X) of shape (r, c) is stored as (r, c), or (c, r) when transposed:
// stored_rows(t, r, c) is its stored row count and stored_rows(t, c, r) its stored row length.
std::int64_t stored_rows(bool transposed, std::int64_t r, std::int64_t c) {
  return transposed ? c : r;
}

}  // namespace

void gemm_rounded(ThreadPool& pool, bool ta, bool tb, std::int64_t m, std::int64_t n,
                  std::int64_t k, const std::uint16_t* a16, std::int64_t lda,
                  const std::uint16_t* b16, std::int64_t ldb, float* c, std::int64_t ldc,
                  bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) {
      for (std::int64_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, 0.0f);
    }
    return;
  }
  pool.parallel_for(m, [&](std::int64_t begin, std::int64_t end) {
    gemm_bf16(ta, tb, end - begin, n, k, ta ? a16 + begin : a16 + begin * lda, lda, b16, ldb,
              accumulate ? 1.0f : 0.0f, c + begin * ldc, ldc);
  });
}

void round_to_bf16(ThreadPool& pool, const float* x, std::int64_t rows, std::int64_t cols,
                   std::vector<std::uint16_t>& out) {
  round_matrix(&pool, x, rows, cols, cols, out);
}

GemmPrecision parse_gemm_precision(const std::string& name) {
  // bf16 products only pay off (and are only sure to be supported by oneDNN) with AVX512_BF16;
  // elsewhere "bf16" runs in fp32.
  const bool bf16 = has_avx512bf16();
  if (name == "fp32") return GemmPrecision::kF32;
  if (name == "bf16" || name == "auto") return bf16 ? GemmPrecision::kBf16 : GemmPrecision::kF32;
  fail<UsageError>("matmul precision '{}': use auto, fp32 or bf16", name);
}

void gemm(ThreadPool& pool, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
          float* c, std::int64_t ldc, bool accumulate, GemmPrecision precision) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) {
      for (std::int64_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, 0.0f);
    }
    return;
  }
  if (precision == GemmPrecision::kBf16) {
    // Each operand rounded once, over the pool (not once per slice of C).
    thread_local std::vector<std::uint16_t> a16, b16;
    round_matrix(&pool, a, stored_rows(trans_a, m, k), stored_rows(trans_a, k, m), lda, a16);
    round_matrix(&pool, b, stored_rows(trans_b, k, n), stored_rows(trans_b, n, k), ldb, b16);
    gemm_rounded(pool, trans_a, trans_b, m, n, k, a16.data(), stored_rows(trans_a, k, m),
                 b16.data(), stored_rows(trans_b, n, k), c, ldc, accumulate);
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  pool.parallel_for(m, [&](std::int64_t begin, std::int64_t end) {
    sgemm(trans_a, trans_b, end - begin, n, k, 1.0f, trans_a ? a + begin : a + begin * lda, lda, b,
          ldb, beta, c + begin * ldc, ldc);
  });
}

// ---- embedding ----
void embedding_forward(std::span<const std::int32_t> tokens, const float* table, std::int64_t c,
                       float* out) {
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::copy_n(table + std::int64_t{tokens[i]} * c, c, out + static_cast<std::int64_t>(i) * c);
  }
}

void embedding_backward(std::span<const std::int32_t> tokens, const float* d_out, std::int64_t c,
                        float* d_table) {
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    kernels::axpy_f32(1.0f, d_out + static_cast<std::int64_t>(i) * c,
                      d_table + std::int64_t{tokens[i]} * c, c);
  }
}

// ---- RMSNorm ----
void rmsnorm_forward(ThreadPool& pool, const float* x, const float* w, std::int64_t n,
                     std::int64_t c, float eps, float* out, float* rstd) {
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * c;
      const float inv = kernels::rms_inverse(xr, c, eps);  // as inference
      rstd[r] = inv;
      float* o = out + r * c;
      for (std::int64_t i = 0; i < c; ++i) o[i] = xr[i] * inv * w[i];
    }
  });
}

void rmsnorm_backward(ThreadPool& pool, const float* x, const float* w, const float* rstd,
                      const float* d_out, std::int64_t n, std::int64_t c, float* d_x, float* d_w) {
  // y_i = x_i r w_i, r = (mean x^2 + eps)^-1/2:
  // dx_i = r w_i dy_i - x_i r^3 / C * sum_j w_j dy_j x_j
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      const float* xr = x + row * c;
      const float* dy = d_out + row * c;
      const float r = rstd[row];
      double lanes[8] = {};  // eight chains: one would make every add wait for the last
      std::int64_t i8 = 0;
      for (; i8 + 8 <= c; i8 += 8) {
        for (int j = 0; j < 8; ++j) {
          lanes[j] += static_cast<double>(w[i8 + j]) * dy[i8 + j] * xr[i8 + j];
        }
      }
      double dot = 0;
      for (double l : lanes) dot += l;
      for (; i8 < c; ++i8) dot += static_cast<double>(w[i8]) * dy[i8] * xr[i8];
      const auto k = static_cast<float>(dot * r * r * r / static_cast<double>(c));
      float* dx = d_x + row * c;
      for (std::int64_t i = 0; i < c; ++i) dx[i] = r * w[i] * dy[i] - xr[i] * k;
    }
  });
  // Each gain's gradient summed over the rows in row order, whatever the thread count: the
  // threads split the columns.
  pool.parallel_for(c, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = 0; row < n; ++row) {
      const float* xr = x + row * c;
      const float* dy = d_out + row * c;
      const float r = rstd[row];
      for (std::int64_t i = begin; i < end; ++i) d_w[i] += dy[i] * xr[i] * r;
    }
  });
}

// ---- RoPE ----
RopeTable::RopeTable(std::int64_t t, std::int64_t hd, float theta) : head_dim(hd) {
  kernels::rope_angles(0, t, hd, theta, cos, sin);
}

namespace {

// Rotates every pair of (N, heads, D) by +angle (forward) or -angle (backward: the transpose).
void rope_apply(ThreadPool& pool, const RopeTable& rope, float* x, std::int64_t n, std::int64_t t,
                std::int64_t heads, model::RopeStyle style, float direction) {
  const std::int64_t hd = rope.head_dim, half = hd / 2;
  const bool adjacent = style == model::RopeStyle::kAdjacent;
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t pos = row % t;
      kernels::rope_rotate(x + row * heads * hd, heads, hd, rope.cos.data() + pos * half,
                           rope.sin.data() + pos * half, direction, adjacent);
    }
  });
}

}  // namespace

void rope_forward(ThreadPool& pool, const RopeTable& rope, float* x, std::int64_t n, std::int64_t t,
                  std::int64_t heads, model::RopeStyle style) {
  rope_apply(pool, rope, x, n, t, heads, style, 1.0f);
}

void rope_backward(ThreadPool& pool, const RopeTable& rope, float* d_x, std::int64_t n,
                   std::int64_t t, std::int64_t heads, model::RopeStyle style) {
  rope_apply(pool, rope, d_x, n, t, heads, style, -1.0f);
}

// ---- attention ----
// The forward computes every score, softmax and weighted sum in the same order and with the same
// vector helpers as inference (kernels::attention_row), so the trainer's logits and the exported
// file's agree exactly: a score summed in another order (a GEMM's) can move an attention output
// across an int8 rounding boundary of the next layer's quantizer, and one flipped code moves the
// logits by ~1e-3. The backward is a few small GEMMs per (batch, head) over the whole (T, T)
// matrix — the masked upper triangle costs flops but keeps the work in oneDNN's kernels.
void attention_forward(ThreadPool& pool, const AttentionShape& s, const float* q, const float* k,
                       const float* v, float* out, float* probs) {
  const std::int64_t T = s.t, H = s.heads, KV = s.kv_heads, D = s.head_dim;
  const std::int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  pool.parallel_for(s.b * H, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t job = begin; job < end; ++job) {
      const std::int64_t b = job / H, h = job % H, kvh = h / group;
      float* p = probs + (b * H + h) * T * T;
      kernels::attention_rows(q + (b * T * H + h) * D, H * D, T, 0, k + (b * T * KV + kvh) * D,
                              v + (b * T * KV + kvh) * D, KV * D, D, scale, p, T,
                              out + (b * T * H + h) * D, H * D);
      for (std::int64_t t = 0; t < T; ++t) std::fill(p + t * T + t + 1, p + (t + 1) * T, 0.0f);
    }
  });
}

namespace {

// One attention head's backward products, over the causal triangle only: queries in blocks of
// kBlock rows, each against the keys up to its block's end (above the diagonal P and dS are zero,
// so the blocks beyond it are skipped). In bf16 every operand is rounded once per head, not once
// per product.
struct HeadBackward {
  static constexpr std::int64_t kBlock = 64;
  std::int64_t T, D, ldq, ldk;
  GemmPrecision precision;
  // bf16 copies, dense: q, k, v, dO (T, D); P and dS (T, T), rounded over the triangle.
  std::vector<std::uint16_t> q16, k16, v16, do16, p16, ds16;

  std::int64_t block_end(std::int64_t t0) const { return std::min(T, t0 + kBlock); }

  // C (m, n) (+)= op(A) op(B) in the head's precision; in bf16, a16 and b16 are the rounded
  // operands (b16 dense in its stored orientation).
  void product(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t kk, const float* a,
               std::int64_t lda, const std::uint16_t* a16, std::int64_t lda16, const float* b,
               std::int64_t ldb, const std::uint16_t* b16, float beta, float* c,
               std::int64_t ldc) const {
    if (precision == GemmPrecision::kBf16) {
      gemm_bf16(ta, tb, m, n, kk, a16, lda16, b16, tb ? kk : n, beta, c, ldc);
    } else {
      sgemm(ta, tb, m, n, kk, 1.0f, a, lda, b, ldb, beta, c, ldc);
    }
  }

  void round_dense(const float* x, std::int64_t ld, std::vector<std::uint16_t>& out) const {
    out.resize(sz(T * D));
    round_rows(x, T, D, ld, out.data());
  }

  // Rows [t0, t1) of a (T, T) matrix, columns up to t1: what the products below read.
  void round_triangle(const float* x, std::vector<std::uint16_t>& out) const {
    out.resize(sz(T * T));
    for (std::int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const std::int64_t t1 = block_end(t0);
      for (std::int64_t t = t0; t < t1; ++t) round_rows(x + t * T, 1, t1, T, out.data() + t * T);
    }
  }

  void run(const float* p, const float* qh, const float* kh, const float* vh, const float* doh,
           float* ds, float* dqh, float* dkh, float* dvh, float beta, float scale) {
    const bool bf16 = precision == GemmPrecision::kBf16;
    // A bf16 copy at an offset (unused, and empty, in fp32).
    const auto at = [bf16](const std::vector<std::uint16_t>& x16, std::int64_t offset) {
      return bf16 ? x16.data() + offset : nullptr;
    };
    if (bf16) {
      round_dense(qh, ldq, q16);
      round_dense(doh, ldq, do16);
      round_triangle(p, p16);
    }
    for (std::int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const std::int64_t t1 = block_end(t0), m = t1 - t0;
      // dP = dO V^T over keys [0, t1); dS = P (dP - rowsum(P dP)) * scale, zero above the diagonal
      product(false, true, m, t1, D, doh + t0 * ldq, ldq, at(do16, t0 * D), D, vh, ldk, at(v16, 0),
              0.0f, ds + t0 * T, T);
      for (std::int64_t t = t0; t < t1; ++t) {
        float* row = ds + t * T;
        const float* pr = p + t * T;
        const float weighted = kernels::dot_f32(pr, row, t + 1);
        for (std::int64_t j = 0; j <= t; ++j) row[j] = pr[j] * (row[j] - weighted) * scale;
        std::fill(row + t + 1, row + t1, 0.0f);
      }
    }
    if (bf16) round_triangle(ds, ds16);
    for (std::int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const std::int64_t t1 = block_end(t0), m = t1 - t0;
      // dQ[t0, t1) = dS[t0, t1) (.., t1) K[0, t1)
      product(false, false, m, D, t1, ds + t0 * T, T, at(ds16, t0 * T), T, kh, ldk, at(k16, 0),
              0.0f, dqh + t0 * ldq, ldq);
      // dK[j0, j1) += dS[j0, T)^T (.., j0..j1) Q[j0, T); dV[j0, j1) += P[j0, T)^T dO[j0, T)
      const std::int64_t j0 = t0, rows = T - j0;
      product(true, false, m, D, rows, ds + j0 * T + j0, T, at(ds16, j0 * T + j0), T, qh + j0 * ldq,
              ldq, at(q16, j0 * D), beta, dkh + j0 * ldk, ldk);
      product(true, false, m, D, rows, p + j0 * T + j0, T, at(p16, j0 * T + j0), T, doh + j0 * ldq,
              ldq, at(do16, j0 * D), beta, dvh + j0 * ldk, ldk);
    }
  }
};

}  // namespace

void attention_backward(ThreadPool& pool, const AttentionShape& s, const float* q, const float* k,
                        const float* v, const float* probs, const float* d_out, float* d_q,
                        float* d_k, float* d_v, GemmPrecision precision) {
  const std::int64_t T = s.t, H = s.heads, KV = s.kv_heads, D = s.head_dim;
  const std::int64_t group = H / KV;
  const std::int64_t ldq = H * D, ldk = KV * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // One job per (batch, kv head): it owns d_k/d_v of that head and d_q of the heads sharing it.
  pool.parallel_for(s.b * KV, [&](std::int64_t begin, std::int64_t end) {
    thread_local std::vector<float> ds;  // (T, T), kept between calls
    thread_local HeadBackward head{};
    ds.resize(sz(T * T));
    head.T = T;
    head.D = D;
    head.ldq = ldq;
    head.ldk = ldk;
    head.precision = precision;
    for (std::int64_t job = begin; job < end; ++job) {
      const std::int64_t b = job / KV, kvh = job % KV;
      const float* kh = k + (b * T * KV + kvh) * D;
      const float* vh = v + (b * T * KV + kvh) * D;
      if (precision == GemmPrecision::kBf16) {
        head.round_dense(kh, ldk, head.k16);
        head.round_dense(vh, ldk, head.v16);
      }
      for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float beta = h == kvh * group ? 0.0f : 1.0f;
        head.run(probs + (b * H + h) * T * T, q + (b * T * H + h) * D, kh, vh,
                 d_out + (b * T * H + h) * D, ds.data(), d_q + (b * T * H + h) * D,
                 d_k + (b * T * KV + kvh) * D, d_v + (b * T * KV + kvh) * D, beta, scale);
      }
    }
  });
}

// ---- ternary linear ----
void ternary_prepare(kernels::KernelContext& ctx, const float* w, std::int64_t out, std::int64_t in,
                     TernaryLinear& layer, GemmPrecision precision, std::int64_t tokens) {
  layer.in = in;
  layer.out = out;
  if (!layer.quantize) {  // a float layer: the latent weights as they are
    layer.dequant.assign(w, w + out * in);
    if (precision == GemmPrecision::kBf16) {
      round_to_bf16(ctx.pool(), layer.dequant.data(), out, in, layer.dequant16);
    } else {
      layer.dequant16.clear();
    }
    return;
  }
  layer.trits.resize(sz(out * in));
  const float scale =
      ternary::quantize_absmean_into(std::span<const float>(w, sz(out * in)), layer.trits);
  layer.in = in;
  layer.out = out;
  // The file stores the scale as fp16 (TQ2_0 blocks); the forward uses exactly that value.
  layer.scale = fp16_to_fp32(fp32_to_fp16(scale));
  if (!int8_through_onednn(ctx)) {
    ctx.pack_into(
        layer.packed, out, in,
        [&](std::int64_t row, std::span<std::int8_t> trits) {
          std::copy_n(layer.trits.data() + row * in, in, trits.data());
        },
        tokens);
  }
  layer.packed.row_scales.assign(sz(out), layer.scale);  // the scaling after either GEMM
  if (precision == GemmPrecision::kBf16) {
    // The backward's weights, trit * scale rounded to bf16, are +-bf16(scale) or 0 (rounding to
    // nearest even is symmetric); the fp32 copy is not needed.
    layer.dequant.clear();
    std::uint16_t s16 = 0;
    round_rows(&layer.scale, 1, 1, 1, &s16);
    const std::array<std::uint16_t, 3> value{static_cast<std::uint16_t>(s16 | 0x8000u), 0, s16};
    layer.dequant16.resize(layer.trits.size());
    ctx.pool().parallel_for(out, [&](std::int64_t begin, std::int64_t end) {
      const std::int8_t* t = layer.trits.data() + begin * in;
      std::uint16_t* d = layer.dequant16.data() + begin * in;
      for (std::int64_t i = 0; i < (end - begin) * in; ++i) d[i] = value[sz(t[i] + 1)];
    });
    return;
  }
  layer.dequant16.clear();
  layer.dequant.resize(layer.trits.size());
  for (std::size_t i = 0; i < layer.trits.size(); ++i) {
    layer.dequant[i] = static_cast<float>(layer.trits[i]) * layer.scale;
  }
}

void quantize_input(ThreadPool& pool, const float* x, std::int64_t n, std::int64_t in,
                    kernels::PackedActivations& acts, GemmInput& x_hat, GemmPrecision precision,
                    bool quantize) {
  const bool bf16 = precision == GemmPrecision::kBf16;
  if (!quantize) {
    if (bf16) {
      x_hat.f32.clear();
      round_to_bf16(pool, x, n, in, x_hat.bf16);
    } else {
      x_hat.bf16.clear();
      x_hat.f32.assign(x, x + n * in);
    }
    return;
  }
  if (bf16 && has_avx512bf16()) {
    x_hat.f32.clear();
    if (x_hat.bf16.size() < sz(n * in)) x_hat.bf16.resize(sz(n * in));
    kernels::reshape_activations(acts, n, in);
    pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t r = begin; r < end; ++r) {
        acts.scales[sz(r)] = quantize_row_bf16_avx512(
            x + r * in, in, acts.q.data() + r * acts.cols_padded, x_hat.bf16.data() + r * in);
      }
      kernels::finish_activation_rows(acts, begin, end);
    });
    return;
  }
  kernels::pack_activations(x, n, in, acts, pool);
  if (bf16) {
    x_hat.f32.clear();
    x_hat.bf16.resize(sz(n * in));
  } else {
    x_hat.bf16.clear();
    x_hat.f32.resize(sz(n * in));
  }
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    thread_local std::vector<float> row;
    row.resize(sz(in));
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int8_t* q = acts.token(r);
      const float scale = acts.scales[sz(r)];
      float* dst = bf16 ? row.data() : x_hat.f32.data() + r * in;
      for (std::int64_t i = 0; i < in; ++i) dst[i] = static_cast<float>(q[i]) * scale;
      if (bf16) round_rows(dst, 1, in, in, x_hat.bf16.data() + r * in);
    }
  });
}

void ternary_forward(kernels::KernelContext& ctx, const TernaryLinear& layer,
                     const kernels::PackedActivations& acts, float* y) {
  if (!int8_through_onednn(ctx)) {
    ctx.matmul(layer.packed, acts, y, sz(layer.out));
    return;
  }
  // The exact int32 sums of int8 activations and trits, then scaled as KernelContext::matmul
  // scales them: float(sum) * weight scale * token scale. Tokens go in slices whose sums stay in
  // the core's L2 cache until they are scaled (about 512 KiB; at least 128 tokens, below which
  // oneDNN's kernels lose speed).
  const std::int64_t n = acts.tokens, out = layer.out;
  const std::int64_t slice =
      std::clamp<std::int64_t>((std::int64_t{1} << 17) / out / 64 * 64, 128, 512);
  ctx.pool().parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    thread_local std::vector<std::int32_t> sums;  // grows only
    if (sums.size() < sz(slice * out)) sums.resize(sz(slice * out));
    for (std::int64_t t0 = begin; t0 < end; t0 += slice) {
      const std::int64_t t1 = std::min(end, t0 + slice);
      gemm_s8(t1 - t0, out, layer.in, acts.token(t0), acts.cols_padded, layer.trits.data(),
              sums.data());
      for (std::int64_t t = t0; t < t1; ++t) {
        kernels::scale_i32(sums.data() + (t - t0) * out, layer.packed.row_scales.data(),
                           acts.scales[sz(t)], y + t * out, out);
      }
    }
  });
}

void linear_forward(kernels::KernelContext& ctx, const TernaryLinear& layer,
                    const kernels::PackedActivations& acts, const GemmInput& x_hat, std::int64_t n,
                    float* y, GemmPrecision precision) {
  if (layer.quantize) {
    ternary_forward(ctx, layer, acts, y);
    return;
  }
  // y (N, out) = x_hat (N, in) . W^T (in, out)
  if (precision == GemmPrecision::kBf16) {
    gemm_rounded(ctx.pool(), false, true, n, layer.out, layer.in, x_hat.bf16.data(), layer.in,
                 layer.dequant16.data(), layer.in, y, layer.out, false);
  } else {
    gemm(ctx.pool(), false, true, n, layer.out, layer.in, x_hat.f32.data(), layer.in,
         layer.dequant.data(), layer.in, y, layer.out, false);
  }
}

void linear_backward(ThreadPool& pool, const float* w, const std::uint16_t* w16, std::int64_t out,
                     std::int64_t in, const GemmInput& x_hat, const float* d_y, std::int64_t n,
                     float* d_x, bool accumulate_dx, float* d_w, GemmPrecision precision) {
  if (precision == GemmPrecision::kBf16) {
    if (w16 == nullptr || x_hat.bf16.size() < sz(n * in)) {
      fail("linear_backward: bf16 GEMMs need the weights and inputs in bf16");
    }
    thread_local std::vector<std::uint16_t> d_y16;
    round_to_bf16(pool, d_y, n, out, d_y16);
    gemm_rounded(pool, false, false, n, in, out, d_y16.data(), out, w16, in, d_x, in,
                 accumulate_dx);
    gemm_rounded(pool, true, false, out, in, n, d_y16.data(), out, x_hat.bf16.data(), in, d_w, in,
                 true);
    return;
  }
  if (x_hat.f32.size() != sz(n * in)) fail("linear_backward: fp32 GEMMs need the inputs in fp32");
  // d_x (N, in) = d_y (N, out) . W (out, in)
  gemm(pool, false, false, n, in, out, d_y, out, w, in, d_x, in, accumulate_dx);
  // d_W (out, in) += d_y^T (out, N) . x_hat (N, in)
  gemm(pool, true, false, out, in, n, d_y, out, x_hat.f32.data(), in, d_w, in, true);
}

void ternary_backward(ThreadPool& pool, const TernaryLinear& layer, const GemmInput& x_hat,
                      const float* d_y, std::int64_t n, float* d_x, bool accumulate_dx, float* d_w,
                      GemmPrecision precision) {
  linear_backward(pool, layer.dequant.data(),
                  layer.dequant16.empty() ? nullptr : layer.dequant16.data(), layer.out, layer.in,
                  x_hat, d_y, n, d_x, accumulate_dx, d_w, precision);
}

void q8_dequantize(const kernels::Q8Matrix& m, float* out) {
  for (std::int64_t r = 0; r < m.rows; ++r) {
    for (std::int64_t b = 0; b < m.cols / 32; ++b) {
      const float d = fp16_to_fp32(m.d[sz(r * m.cols_padded / 32 + b)]);
      const std::int8_t* q = m.q.data() + r * m.cols_padded + b * 32;
      for (std::int64_t i = 0; i < 32; ++i) out[r * m.cols + b * 32 + i] = d * q[i];
    }
  }
}

// ---- FFN activation ----
void ffn_act_forward(ThreadPool& pool, model::FfnActivation act, const float* gate, const float* up,
                     std::int64_t count, float* h) {
  // The inference engine's function, so the activations (which feed a quantizer) agree exactly.
  pool.parallel_for(count, [&](std::int64_t begin, std::int64_t end) {
    kernels::gated_activation(gate + begin, up + begin, h + begin, end - begin,
                              act == model::FfnActivation::kReluSquared);
  });
}

void ffn_act_backward(ThreadPool& pool, model::FfnActivation act, const float* gate,
                      const float* up, const float* d_h, std::int64_t count, float* d_gate,
                      float* d_up) {
  pool.parallel_for(count, [&](std::int64_t begin, std::int64_t end) {
    if (act == model::FfnActivation::kSwiGlu) {
      // a = g sig(g), da/dg = sig (1 + g (1 - sig)); d_gate holds sig first.
      kernels::sigmoid_f32(gate + begin, d_gate + begin, end - begin);
      for (std::int64_t i = begin; i < end; ++i) {
        const float g = gate[i], sig = d_gate[i];
        d_up[i] = d_h[i] * g * sig;
        d_gate[i] = d_h[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
      }
    } else {
      for (std::int64_t i = begin; i < end; ++i) {
        const float g = gate[i];
        d_up[i] = d_h[i] * (g > 0 ? g * g : 0.0f);
        d_gate[i] = d_h[i] * up[i] * (g > 0 ? 2.0f * g : 0.0f);
      }
    }
  });
}

// ---- mHC-lite ----
void mhc_read_forward(ThreadPool& pool, const mhc::MhcParams& p, const float* x,
                      std::int64_t n_rows, std::int64_t c, float* u) {
  const std::int64_t n = p.n;
  pool.parallel_for(n_rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      mhc::read(p, std::span<const float>(x + r * n * c, sz(n * c)), sz(c),
                std::span<float>(u + r * c, sz(c)));
    }
  });
}

void mhc_read_backward(const mhc::MhcParams& p, const float* x, const float* d_u,
                       std::int64_t n_rows, std::int64_t c, float* d_x, float* d_params) {
  const std::int64_t n = p.n;
  const std::size_t h_pre = mhc::packed_layout(p.n).h_pre;
  for (std::int64_t r = 0; r < n_rows; ++r) {
    const float* du = d_u + r * c;
    for (std::int64_t j = 0; j < n; ++j) {
      const float* xj = x + (r * n + j) * c;
      kernels::axpy_f32(p.h_pre[sz(j)], du, d_x + (r * n + j) * c, c);
      if (n > 1) d_params[h_pre + sz(j)] += kernels::dot_f32(xj, du, c);
    }
  }
}

void mhc_write_forward(ThreadPool& pool, const mhc::MhcParams& p, std::span<const float> h,
                       const float* x_old, const float* y, std::int64_t n_rows, std::int64_t c,
                       float* x_new) {
  const std::int64_t n = p.n;
  pool.parallel_for(n_rows, [&](std::int64_t begin, std::int64_t end) {
    std::copy(x_old + begin * n * c, x_old + end * n * c, x_new + begin * n * c);
    for (std::int64_t r = begin; r < end; ++r) {
      mhc::write(p, h, std::span<float>(x_new + r * n * c, sz(n * c)), sz(c),
                 std::span<const float>(y + r * c, sz(c)));
    }
  });
}

void mhc_write_backward(const mhc::MhcParams& p, std::span<const float> h, const float* x_old,
                        const float* y, const float* d_x_new, std::int64_t n_rows, std::int64_t c,
                        float* d_x_old, float* d_y, float* d_params) {
  const std::int64_t n = p.n;
  const mhc::PackedLayout layout = mhc::packed_layout(p.n);
  std::vector<double> d_h(sz(n * n), 0.0);
  for (std::int64_t r = 0; r < n_rows; ++r) {
    float* dy = d_y + r * c;
    std::fill_n(dy, c, 0.0f);
    for (std::int64_t i = 0; i < n; ++i) {
      const float* dn = d_x_new + (r * n + i) * c;
      kernels::axpy_f32(p.h_post[sz(i)], dn, dy, c);
      if (n > 1) {
        d_params[layout.h_post + sz(i)] += kernels::dot_f32(dn, y + r * c, c);
        for (std::int64_t j = 0; j < n; ++j) {
          d_h[sz(i * n + j)] += kernels::dot_f32(dn, x_old + (r * n + j) * c, c);
        }
      }
    }
    for (std::int64_t j = 0; j < n; ++j) {
      float* dx = d_x_old + (r * n + j) * c;
      std::fill_n(dx, c, 0.0f);
      for (std::int64_t i = 0; i < n; ++i) {
        kernels::axpy_f32(h[sz(i * n + j)], d_x_new + (r * n + i) * c, dx, c);
      }
    }
  }
  if (n == 2) {
    // H = a I + (1 - a) swap, a = sigmoid(l): dH/da = I - swap
    const double a = 1.0 / (1.0 + std::exp(-static_cast<double>(p.res_logits[0])));
    const double da = d_h[0] + d_h[3] - d_h[1] - d_h[2];
    d_params[layout.logits] += static_cast<float>(da * a * (1.0 - a));
  } else if (n == 4) {
    // H = sum_k w_k P_k, w = softmax(l): dl_k = w_k (dw_k - sum_j w_j dw_j)
    const auto& perms = mhc::permutations4();
    double top = -1e300;
    for (float l : p.res_logits) top = std::max(top, static_cast<double>(l));
    std::vector<double> w(24), dw(24);
    double sum = 0;
    for (int k = 0; k < 24; ++k) sum += (w[sz(k)] = std::exp(p.res_logits[sz(k)] - top));
    double mean = 0;
    for (int k = 0; k < 24; ++k) {
      w[sz(k)] /= sum;
      for (int i = 0; i < 4; ++i) dw[sz(k)] += d_h[sz(i * 4 + perms[sz(k)][sz(i)])];
      mean += w[sz(k)] * dw[sz(k)];
    }
    for (int k = 0; k < 24; ++k) {
      d_params[layout.logits + sz(k)] += static_cast<float>(w[sz(k)] * (dw[sz(k)] - mean));
    }
  }
}

// ---- loss ----
LossStats loss_forward_backward(ThreadPool& pool, const float* logits,
                                std::span<const std::int32_t> targets, std::int64_t v,
                                double entropy_weight, float grad_scale, float* d_logits) {
  const auto n = static_cast<std::int64_t>(targets.size());
  std::vector<double> ce(sz(n)), ent(sz(n));
  // Negative targets are context only (a chat's user turns): no loss, no gradient; the mean is
  // over the rest.
  const auto counted = std::count_if(targets.begin(), targets.end(), [](auto t) { return t >= 0; });
  const double inv_n = counted > 0 ? 1.0 / static_cast<double>(counted) : 0.0;
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const float* z = logits + r * v;
      float* dz = d_logits + r * v;
      const std::int32_t target = targets[sz(r)];
      if (target < 0) {
        std::fill(dz, dz + v, 0.0f);
        continue;
      }
      const float top = kernels::max_f32(z, v);
      kernels::exp_shifted(z, top, dz, v);  // unnormalized p, reused below
      const double sum = kernels::sum_f64(dz, v);
      const double log_sum = std::log(sum);
      const double log_z = static_cast<double>(top) + log_sum;
      const auto inv_sum = static_cast<float>(1.0 / sum);
      kernels::axpby_f32(inv_sum, dz, 0.0f, dz, v);
      // sum p_i (z_i - top), in double: sum p_i z_i - top sum p_i
      const double pz =
          kernels::dot_f64(dz, z, v) - static_cast<double>(top) * kernels::sum_f64(dz, v);
      const double entropy = log_sum - pz;  // -sum p log p
      ce[sz(r)] = log_z - z[target];
      ent[sz(r)] = entropy;
      // loss = ce - w H: dz_i = (p_i - [i = target]) + w p_i (log p_i + H)
      const auto g = static_cast<float>(static_cast<double>(grad_scale) * inv_n);
      if (entropy_weight != 0) {
        const auto w = static_cast<float>(entropy_weight);
        const auto shift = static_cast<float>(entropy - log_z);
        for (std::int64_t i = 0; i < v; ++i) {
          const float pi = dz[i];
          dz[i] = (pi + w * pi * (z[i] + shift)) * g;  // log p_i = z_i - log_z
        }
      } else {
        for (std::int64_t i = 0; i < v; ++i) dz[i] *= g;
      }
      dz[target] -= g;
    }
  });
  LossStats s;
  for (std::int64_t r = 0; r < n; ++r) {
    s.ce += ce[sz(r)];
    s.entropy += ent[sz(r)];
  }
  s.ce *= inv_n;
  s.entropy *= inv_n;
  s.loss = s.ce - entropy_weight * s.entropy;
  return s;
}

}  // namespace nanochat::train
