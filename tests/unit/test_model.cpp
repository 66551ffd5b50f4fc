// The nanochat transformer against a plain float reference forward that follows the same
// quantization rules but computes every ternary layer from the decoded trits with plain loops
// (no packing, no kernels); decoding with the KV cache against recomputing the whole sequence.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/kernels/kquant.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/random_model.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/model/weight_cache.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"
#include "nanochat/util/log.hpp"
#include "test_helpers.hpp"

namespace nanochat::model {
namespace {

namespace fs = std::filesystem;

BpeVocab tiny_vocab() {
  BpeTrainOptions o;
  o.vocab_size = 300;
  BpeTrainer t(o);
  std::string text;
  for (int i = 0; i < 50; ++i)
    text += "the cat sat on the mat; def f(x): return x * " + std::to_string(i) + "\n";
  t.add_text(text);
  return t.train();
}

ModelConfig tiny_config(int streams, FfnActivation act, bool sub_norms, bool tied) {
  ModelConfig c;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 512;
  c.vocab_size = 300;
  c.context_length = 64;
  c.ffn_activation = act;
  c.sub_norms = sub_norms;
  c.tied_embeddings = tied;
  c.mhc_streams = streams;
  return c;
}

fs::path write_model(const ModelConfig& c, RandomModelOptions o, const std::string& name) {
  fs::path path =
      fs::temp_directory_path() / fmt::format("nanochat-model-{}-{}.gguf", ::getpid(), name);
  static const BpeVocab vocab = tiny_vocab();
  write_random_model(
      c, o, [&](gguf::GgufWriter& w) { write_tokenizer_metadata(w, vocab, false); }, path);
  return path;
}

// ---- reference ----
struct RefLinear {
  std::int64_t in, out;
  std::vector<float> w;  // [out][in] = trit * scale
};

RefLinear ref_linear(const gguf::GgufFile& f, const std::string& name) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  RefLinear r{static_cast<std::int64_t>(t->dims[0]), static_cast<std::int64_t>(t->dims[1]), {}};
  using gguf::TensorType;
  kernels::KQuantType block_type{};
  if (t->type.is(TensorType::kQ8_0) || kernels::kquant_from_ggml(t->type.id, block_type)) {
    // Q8_0 heads and heads in a block type with head kernels: their float values
    r.w = dequantize_tensor(f, name);
    return r;
  }
  if (t->type.is(TensorType::kF32) || t->type.is(TensorType::kF16) ||
      t->type.is(TensorType::kBF16)) {
    // Float head: the engine quantizes it to Q8_0 (32-value blocks, d = max|w| / 127).
    const auto w = dequantize_tensor(f, name);
    r.w.resize(w.size());
    for (std::size_t b = 0; b < w.size(); b += 32) {
      float amax = 0;
      for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w[b + i]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      const float dh = fp16_to_fp32(fp32_to_fp16(d));
      for (std::size_t i = 0; i < 32; ++i) r.w[b + i] = dh * std::nearbyint(w[b + i] * id);
    }
    return r;
  }
  const auto n = static_cast<std::size_t>(r.in * r.out);
  std::vector<std::int8_t> trits(n);
  std::vector<float> scales(n / 256);
  if (t->type.is(TensorType::kTQ2_0)) {
    ternary::decode_tq2_0(f.tensor_data(*t), trits, scales);
  } else if (t->type.is(TensorType::kI2_S)) {  // one scale for the whole tensor
    std::fill(scales.begin(), scales.end(), ternary::decode_i2_s(f.tensor_data(*t), trits));
  } else {
    ternary::decode_tq1_0(f.tensor_data(*t), trits, scales);
  }
  // An optional one-value `.scale` tensor multiplies the layer (llama.cpp's bitnet layout).
  const std::string scale_name = name.substr(0, name.size() - 7) + ".scale";
  const float extra = f.find_tensor(scale_name) ? dequantize_tensor(f, scale_name).at(0) : 1.0f;
  r.w.resize(n);
  for (std::size_t i = 0; i < n; ++i) r.w[i] = trits[i] * scales[i / 256] * extra;
  return r;
}

// y = W (dequant(quant(x))): activations quantized per token exactly as the engine does.
std::vector<float> ref_apply(const RefLinear& l, const std::vector<float>& x) {
  std::vector<std::int8_t> q(static_cast<std::size_t>(l.in));
  float xs = 0;
  ternary::quantize_activations(x.data(), 1, l.in, q.data(), q.size(), &xs);
  std::vector<float> y(static_cast<std::size_t>(l.out));
  for (std::int64_t o = 0; o < l.out; ++o) {
    double acc = 0;
    for (std::int64_t i = 0; i < l.in; ++i)
      acc += static_cast<double>(l.w[static_cast<std::size_t>(o * l.in + i)]) *
             q[static_cast<std::size_t>(i)];
    y[static_cast<std::size_t>(o)] = static_cast<float>(acc * xs);
  }
  return y;
}

std::vector<float> ref_norm(const std::vector<float>& x, const std::vector<float>& w, float eps) {
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i] * inv) * w[i];
  return out;
}

void ref_rope(std::vector<float>& v, std::int64_t heads, std::int64_t hd, std::int64_t pos,
              float theta, RopeStyle style) {
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < hd / 2; ++i) {
      const double angle = static_cast<double>(pos) *
                           std::pow(static_cast<double>(theta),
                                    -2.0 * static_cast<double>(i) / static_cast<double>(hd));
      const bool adjacent = style == RopeStyle::kAdjacent;
      float& a = v[static_cast<std::size_t>(h * hd + (adjacent ? 2 * i : i))];
      float& b = v[static_cast<std::size_t>(h * hd + (adjacent ? 2 * i + 1 : i + hd / 2))];
      const double x0 = a, x1 = b;
      a = static_cast<float>(x0 * std::cos(angle) - x1 * std::sin(angle));
      b = static_cast<float>(x0 * std::sin(angle) + x1 * std::cos(angle));
    }
}

// Logits of every position of `tokens`, recomputing attention over the prefix each time.
std::vector<std::vector<float>> reference_forward(const gguf::GgufFile& f,
                                                  const std::vector<TokenId>& tokens) {
  const ModelConfig c = ModelConfig::from_gguf(f);
  const std::int64_t dim = c.dim, hd = c.head_dim(), n = c.mhc_streams;
  const auto emb = dequantize_tensor(f, tensors::kEmbedding);
  auto vecf = [&](const std::string& name) { return dequantize_tensor(f, name); };
  auto mhc_of = [&](const std::string& name) {
    return n == 1 ? mhc::MhcParams::identity(1) : mhc::unpack(vecf(name), static_cast<int>(n));
  };
  const std::size_t T = tokens.size();
  // streams[t][s] vectors
  std::vector<std::vector<std::vector<float>>> x(
      T, std::vector<std::vector<float>>(static_cast<std::size_t>(n)));
  for (std::size_t t = 0; t < T; ++t)
    for (auto& s : x[t])
      s.assign(emb.begin() + tokens[t] * dim, emb.begin() + (tokens[t] + 1) * dim);
  auto read = [&](const mhc::MhcParams& p, std::size_t t) {
    std::vector<float> u(static_cast<std::size_t>(dim), 0.0f);
    for (std::int64_t s = 0; s < n; ++s)
      for (std::int64_t i = 0; i < dim; ++i)
        u[static_cast<std::size_t>(i)] +=
            p.h_pre[static_cast<std::size_t>(s)] *
            x[t][static_cast<std::size_t>(s)][static_cast<std::size_t>(i)];
    return u;
  };
  auto write = [&](const mhc::MhcParams& p, std::size_t t, const std::vector<float>& y) {
    const auto hm = mhc::residual_matrix(p);
    auto old = x[t];
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t d = 0; d < dim; ++d) {
        float acc = 0;
        for (std::int64_t j = 0; j < n; ++j)
          acc += hm[static_cast<std::size_t>(i * n + j)] *
                 old[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)];
        x[t][static_cast<std::size_t>(i)][static_cast<std::size_t>(d)] =
            acc + p.h_post[static_cast<std::size_t>(i)] * y[static_cast<std::size_t>(d)];
      }
  };
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const auto blk = [l](const char* part) { return tensors::block(l, part); };
    const auto wq = ref_linear(f, blk(tensors::kAttnQ)), wk = ref_linear(f, blk(tensors::kAttnK)),
               wv = ref_linear(f, blk(tensors::kAttnV)),
               wo = ref_linear(f, blk(tensors::kAttnOutput)),
               wg = ref_linear(f, blk(tensors::kFfnGate)), wu = ref_linear(f, blk(tensors::kFfnUp)),
               wd = ref_linear(f, blk(tensors::kFfnDown));
    const auto attn_mhc = mhc_of(blk(tensors::kAttnMhc)), ffn_mhc = mhc_of(blk(tensors::kFfnMhc));
    std::vector<std::vector<float>> keys(T), vals(T);
    std::vector<std::vector<float>> attn_out(T);
    for (std::size_t t = 0; t < T; ++t) {
      const auto h = ref_norm(read(attn_mhc, t), vecf(blk(tensors::kAttnNorm)), c.norm_eps);
      auto q = ref_apply(wq, h);
      keys[t] = ref_apply(wk, h);
      vals[t] = ref_apply(wv, h);
      ref_rope(q, c.n_heads, hd, static_cast<std::int64_t>(t), c.rope_theta, c.rope_style);
      ref_rope(keys[t], c.n_kv_heads, hd, static_cast<std::int64_t>(t), c.rope_theta, c.rope_style);
      std::vector<float> a(static_cast<std::size_t>(dim), 0.0f);
      for (std::int64_t head = 0; head < c.n_heads; ++head) {
        const std::int64_t kvh = head / (c.n_heads / c.n_kv_heads);
        std::vector<double> sc(t + 1);
        double top = -1e300;
        for (std::size_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (std::int64_t i = 0; i < hd; ++i)
            dot += q[static_cast<std::size_t>(head * hd + i)] *
                   keys[s][static_cast<std::size_t>(kvh * hd + i)];
          sc[s] = dot / std::sqrt(static_cast<double>(hd));
          top = std::max(top, sc[s]);
        }
        double sum = 0;
        for (auto& v : sc) sum += (v = std::exp(v - top));
        for (std::size_t s = 0; s <= t; ++s)
          for (std::int64_t i = 0; i < hd; ++i)
            a[static_cast<std::size_t>(head * hd + i)] +=
                static_cast<float>(sc[s] / sum) * vals[s][static_cast<std::size_t>(kvh * hd + i)];
      }
      if (c.sub_norms) a = ref_norm(a, vecf(blk(tensors::kAttnSubNorm)), c.norm_eps);
      attn_out[t] = ref_apply(wo, a);
    }
    for (std::size_t t = 0; t < T; ++t) write(attn_mhc, t, attn_out[t]);
    for (std::size_t t = 0; t < T; ++t) {
      const auto h = ref_norm(read(ffn_mhc, t), vecf(blk(tensors::kFfnNorm)), c.norm_eps);
      auto g = ref_apply(wg, h);
      const auto u = ref_apply(wu, h);
      for (std::size_t i = 0; i < g.size(); ++i) {
        const float a = c.ffn_activation == FfnActivation::kSwiGlu
                            ? g[i] / (1.0f + std::exp(-g[i]))
                            : (g[i] > 0 ? g[i] * g[i] : 0.0f);
        g[i] = a * u[i];
      }
      if (c.sub_norms) g = ref_norm(g, vecf(blk(tensors::kFfnSubNorm)), c.norm_eps);
      write(ffn_mhc, t, ref_apply(wd, g));
    }
  }
  std::vector<std::vector<float>> logits(T);
  for (std::size_t t = 0; t < T; ++t) {
    std::vector<float> m(static_cast<std::size_t>(dim), 0.0f);
    for (const auto& s : x[t])
      for (std::int64_t i = 0; i < dim; ++i)
        m[static_cast<std::size_t>(i)] += s[static_cast<std::size_t>(i)] / static_cast<float>(n);
    const auto h = ref_norm(m, vecf(tensors::kOutputNorm), c.norm_eps);
    {
      logits[t] =
          ref_apply(ref_linear(f, c.tied_embeddings ? tensors::kEmbedding : tensors::kOutput), h);
    }
  }
  return logits;
}

struct Variant {
  const char* name;
  int streams;
  FfnActivation act;
  bool sub_norms, tied;
  gguf::TensorType ternary_type;
  std::optional<gguf::TensorType> output_type = std::nullopt;  // nullopt: ternary
  const char* arch = "nanochat";
  gguf::TensorType embedding_type = gguf::TensorType::kF32;
  bool scale_tensors = false;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

class ModelVariant : public ::testing::TestWithParam<Variant> {};

using nanochat::test_support::quiet_kernels;

// The tiny model of variant `v`, random weights from `seed`, written as `name`.
fs::path write_variant(const Variant& v, std::uint64_t seed, const std::string& name) {
  RandomModelOptions o;
  o.seed = seed;
  o.ternary_type = v.ternary_type;
  o.output_type = v.output_type;
  o.embedding_type = v.embedding_type;
  o.scale_tensors = v.scale_tensors;
  ModelConfig config = tiny_config(v.streams, v.act, v.sub_norms, v.tied);
  config.architecture = v.arch;
  config.rope_style = config_for_architecture(v.arch).rope_style;
  return write_model(config, o, name);
}

TEST_P(ModelVariant, MatchesTheReferenceAndTheCacheMatchesRecomputation) {
  const Variant v = GetParam();
  const fs::path path = write_variant(v, 7, v.name);
  const auto file = gguf::GgufFile::open(path);
  kernels::KernelContext ctx(quiet_kernels(2));
  auto model = Model::load(file, ctx);
  const std::vector<TokenId> tokens = {5, 17, 250, 3, 99, 42, 7};
  const auto ref = reference_forward(file, tokens);

  // Prefill of the whole sequence (GEMM path), all logits.
  KvCache cache(model->config(), 16);
  std::vector<float> all;
  model->forward(tokens, cache, all, true);
  ASSERT_EQ(all.size(), tokens.size() * 300);
  // Token by token (GEMV path) with the cache.
  KvCache cache2(model->config(), 16);
  std::vector<float> step;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    model->forward(std::span<const TokenId>(&tokens[t], 1), cache2, step);
    double max_ref = 0, max_err = 0, max_err_cache = 0;
    for (std::size_t i = 0; i < 300; ++i) {
      const float prefill = all[t * 300 + i];
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[t][i])));
      max_err = std::max(max_err, std::fabs(static_cast<double>(prefill - ref[t][i])));
      max_err_cache = std::max(max_err_cache, std::fabs(static_cast<double>(step[i] - prefill)));
    }
    EXPECT_LE(max_err, 1e-3 * max_ref) << v.name << " position " << t << " vs reference";
    EXPECT_LE(max_err_cache, 1e-4 * max_ref) << v.name << " position " << t << " cache vs prefill";
  }
  EXPECT_EQ(cache2.length(), 7);

  // Continuous batching: three sequences at different positions in one pass give exactly what
  // each gives alone, and a prompt run in chunks gives exactly what it gives in one piece.
  KvCache a(model->config(), 16), b(model->config(), 16), c(model->config(), 16);
  KvCache a1(model->config(), 16), b1(model->config(), 16), c1(model->config(), 16);
  std::vector<float> scratch;
  model->forward(std::span(tokens).first(4), a, scratch);
  model->forward(std::span(tokens).first(4), a1, scratch);
  model->forward(std::span(tokens).first(2), c, scratch);
  model->forward(std::span(tokens).first(2), c1, scratch);
  const std::vector<Model::Segment> segments = {{std::span(tokens).subspan(4, 1), &a, false},
                                                {std::span(tokens).first(3), &b, true},
                                                {std::span(tokens).subspan(2, 2), &c, false}};
  ForwardBuffers buffers;
  std::vector<float> batched;
  model->forward_batch(segments, buffers, batched);
  ASSERT_EQ(batched.size(), 5u * 300);
  std::vector<float> alone, part;
  model->forward(std::span(tokens).subspan(4, 1), a1, part);
  alone.insert(alone.end(), part.begin(), part.end());
  model->forward(std::span(tokens).first(3), b1, part, true);
  alone.insert(alone.end(), part.begin(), part.end());
  model->forward(std::span(tokens).subspan(2, 2), c1, part);
  alone.insert(alone.end(), part.begin(), part.end());
  EXPECT_EQ(batched, alone) << v.name << ": batched vs alone";
  EXPECT_EQ(a.length(), 5);
  EXPECT_EQ(b.length(), 3);
  EXPECT_EQ(c.length(), 4);
  for (std::int64_t layer = 0; layer < model->config().n_layers; ++layer) {
    const std::size_t n = 4 * static_cast<std::size_t>(model->config().kv_dim());
    EXPECT_TRUE(std::equal(c.keys(layer), c.keys(layer) + n, c1.keys(layer))) << layer;
    EXPECT_TRUE(std::equal(c.values(layer), c.values(layer) + n, c1.values(layer))) << layer;
  }
  KvCache chunked(model->config(), 16);
  model->forward(std::span(tokens).first(3), chunked, scratch);
  model->forward(std::span(tokens).subspan(3), chunked, part);
  EXPECT_EQ(part, std::vector<float>(all.end() - 300, all.end())) << v.name << ": chunked";
  fs::remove(path);
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The repacked-weights cache: a model mapped from it gives the logits of one repacked from the
// file, bit for bit, on every architecture and head type; a damaged, truncated or stale cache
// file is named in a warning and written again (the same bytes), never an error.
TEST_P(ModelVariant, TheWeightCacheGivesTheSameLogitsAndDamageIsRepaired) {
  init_logging(0, LogFormat::kText);  // warnings on stderr
  const Variant v = GetParam();
  const fs::path path = write_variant(v, 11, std::string("wc_") + v.name);
  const fs::path dir = test_support::temp_dir(std::string("wc_") + v.name);
  const fs::path cache_file = dir / "weights" / "model.bin";
  const auto file = gguf::GgufFile::open(path);
  const std::vector<TokenId> tokens = {5, 17, 250, 3, 99, 42, 7};
  const auto logits = [&](const fs::path& cache, int threads) {
    kernels::KernelContext ctx(quiet_kernels(threads));
    auto model = Model::load(file, ctx, {}, cache);
    KvCache kv(model->config(), 16);
    std::vector<float> all;
    model->forward(tokens, kv, all, true);
    return all;
  };
  const auto want = logits({}, 1);
  ASSERT_FALSE(fs::exists(cache_file));
  EXPECT_EQ(logits(cache_file, 2), want) << "repacked, cache written";
  ASSERT_TRUE(fs::exists(cache_file));
  const std::string good = read_bytes(cache_file);
  EXPECT_EQ(logits(cache_file, 2), want) << "mapped from the cache";
  EXPECT_EQ(logits(cache_file, 1), want) << "mapped from the cache, one thread";

  const auto damaged = [&](const std::function<void()>& damage, const std::string& reason) {
    damage();
    testing::internal::CaptureStderr();
    EXPECT_EQ(logits(cache_file, 2), want) << reason;
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("repacked-weights cache " + cache_file.string()), std::string::npos) << err;
    EXPECT_NE(err.find(reason), std::string::npos) << err;
    EXPECT_EQ(read_bytes(cache_file), good) << "rewritten after: " << reason;
  };
  damaged(
      [&] {
        std::string bytes = good;
        bytes[80] = static_cast<char>(bytes[80] ^ 1);  // inside the key
        std::ofstream(cache_file, std::ios::binary) << bytes;
      },
      "checksum");
  damaged([&] { fs::resize_file(cache_file, good.size() / 2); }, "truncated");
  damaged([&] { fs::resize_file(cache_file, 20); }, "truncated");
  damaged([&] { std::ofstream(cache_file, std::ios::binary) << "not a cache"; }, "truncated");
  damaged(
      [&] {
        std::string bytes = good;
        bytes[0] = 'X';
        std::ofstream(cache_file, std::ios::binary) << bytes;
      },
      "not a weight cache file");
  // A blob's bytes are not hashed: damage there is not seen (the file is written atomically).
  // A file with another key (the model file changed) is stale.
  fs::last_write_time(path, fs::last_write_time(path) + std::chrono::seconds(5));
  const auto file2 = gguf::GgufFile::open(path);
  {
    testing::internal::CaptureStderr();
    kernels::KernelContext ctx(quiet_kernels(2));
    (void)Model::load(file2, ctx, {}, cache_file);
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("stale"), std::string::npos) << err;
  }
  fs::remove_all(dir);
  fs::remove(path);
}

// The 1.6-bit base-3 layout (what the tuner picks for decoding on CPUs with AVX512-VBMI) gives
// the logits of the 2-bit one bit for bit — prefill, token by token, and mapped from the
// repacked-weights cache — on every architecture and head type.
TEST_P(ModelVariant, TheBase3LayoutGivesTheSameLogits) {
  if (!kernels::avx512_uses_vbmi()) {
    GTEST_SKIP() << "no AVX-512 VBMI here (or NANOCHAT_NO_VBMI is set)";
  }
  const Variant v = GetParam();
  const fs::path path = write_variant(v, 13, std::string("b3_") + v.name);
  const fs::path dir = test_support::temp_dir(std::string("b3_") + v.name);
  const auto file = gguf::GgufFile::open(path);
  const std::vector<TokenId> tokens = {5, 17, 250, 3, 99, 42, 7};
  const auto logits = [&](std::optional<kernels::Layout> layout, const fs::path& cache) {
    kernels::KernelOptions o = quiet_kernels(2);
    o.isa = kernels::Isa::kAvx512;
    o.layout = layout;
    kernels::KernelContext ctx(o);
    auto model = Model::load(file, ctx, {}, cache);
    KvCache kv(model->config(), 16), kv2(model->config(), 16);
    std::vector<float> all, step;
    model->forward(tokens, kv, all, true);
    for (const TokenId t : tokens) {
      model->forward(std::span<const TokenId>(&t, 1), kv2, step);
      all.insert(all.end(), step.begin(), step.end());
    }
    return all;
  };
  const auto want = logits(kernels::Layout::kStride64, {});
  EXPECT_EQ(logits(kernels::Layout::kBase3, {}), want) << v.name;
  const fs::path cache_file = dir / "weights" / "model.bin";
  EXPECT_EQ(logits(kernels::Layout::kBase3, cache_file), want) << v.name << ": cache written";
  ASSERT_TRUE(fs::exists(cache_file));
  EXPECT_EQ(logits(kernels::Layout::kBase3, cache_file), want) << v.name << ": cache mapped";
  fs::remove_all(dir);
  fs::remove(path);
}

constexpr auto kTq1 = gguf::TensorType::kTQ1_0, kTq2 = gguf::TensorType::kTQ2_0;
constexpr auto kF32 = gguf::TensorType::kF32, kF16 = gguf::TensorType::kF16,
               kBf16 = gguf::TensorType::kBF16, kQ8 = gguf::TensorType::kQ8_0,
               kQ4K = gguf::TensorType::kQ4_K, kQ6K = gguf::TensorType::kQ6_K,
               kQ5K = gguf::TensorType::kQ5_K, kQ40 = gguf::TensorType::kQ4_0,
               kQ41 = gguf::TensorType::kQ4_1, kQ50 = gguf::TensorType::kQ5_0,
               kQ51 = gguf::TensorType::kQ5_1;

INSTANTIATE_TEST_SUITE_P(
    Architectures, ModelVariant,
    ::testing::Values(
        Variant{"plain_swiglu_tq2", 1, FfnActivation::kSwiGlu, false, false, kTq2},
        Variant{"mhc2_relu2_subnorm_tq1", 2, FfnActivation::kReluSquared, true, false, kTq1},
        Variant{"mhc4_swiglu_tied_tq2", 4, FfnActivation::kSwiGlu, false, true, kTq2},
        Variant{"mhc4_relu2_subnorm_tied_tq1", 4, FfnActivation::kReluSquared, true, true, kTq1},
        Variant{"nanochat_q8_head", 1, FfnActivation::kReluSquared, true, false, kTq2, kQ8},
        Variant{"nanochat_f16_head_bf16_embd", 1, FfnActivation::kSwiGlu, false, false, kTq2, kF16,
                "nanochat", kBf16},
        Variant{"nanochat_f32_head_q8_embd", 2, FfnActivation::kSwiGlu, false, false, kTq1, kF32,
                "nanochat", kQ8},
        // llama.cpp's bitnet: tied F16 embedding (as BitNet b1.58 2B4T), NeoX RoPE, relu2 via
        // bitnet.hidden_act, layer scales in `.scale` tensors.
        Variant{"bitnet_tied_f16", 1, FfnActivation::kReluSquared, true, true, kTq2, std::nullopt,
                "bitnet", kF16, true},
        Variant{"bitnet_silu_q8_head", 1, FfnActivation::kSwiGlu, true, false, kTq1, kQ8, "bitnet"},
        // Ternary llama (TriLM): SwiGLU, adjacent RoPE, F16 head and embedding.
        Variant{"llama_f16_head", 1, FfnActivation::kSwiGlu, false, false, kTq1, kF16, "llama",
                kF16},
        Variant{"llama_tied_bf16", 1, FfnActivation::kSwiGlu, false, true, kTq2, std::nullopt,
                "llama", kBf16},
        // As llama-quantize writes them by default: a tied Q6_K embedding for bitnet, a Q4_K
        // embedding and a Q6_K head for llama (the K-quant head kernels).
        Variant{"bitnet_tied_q6k", 1, FfnActivation::kReluSquared, true, true, kTq2, std::nullopt,
                "bitnet", kQ6K, true},
        Variant{"llama_q6k_head_q4k_embd", 1, FfnActivation::kSwiGlu, false, false, kTq1, kQ6K,
                "llama", kQ4K},
        Variant{"nanochat_q4k_head", 2, FfnActivation::kReluSquared, true, false, kTq2, kQ4K},
        // The other block types with head kernels (kquant.hpp), as heads and tied embeddings.
        Variant{"bitnet_tied_q4_0", 1, FfnActivation::kReluSquared, true, true, kTq2, std::nullopt,
                "bitnet", kQ40, true},
        Variant{"llama_q5_0_head_q4_1_embd", 1, FfnActivation::kSwiGlu, false, false, kTq1, kQ50,
                "llama", kQ41},
        Variant{"nanochat_q5k_head_q5_1_embd", 2, FfnActivation::kReluSquared, true, false, kTq2,
                kQ5K, "nanochat", kQ51},
        Variant{"llama_q4_1_head_q5k_embd", 1, FfnActivation::kSwiGlu, false, false, kTq2, kQ41,
                "llama", kQ5K},
        Variant{"nanochat_q5_1_head_q5_0_embd", 1, FfnActivation::kSwiGlu, false, false, kTq1, kQ51,
                "nanochat", kQ50}),
    [](const auto& p) { return std::string(p.param.name); });

// The weight cache folder stays bounded: files whose model is gone are removed, then the least
// recently used beyond the budget; the file just written and anything that is not a cache file
// are kept.
TEST(WeightCache, PruneRemovesOrphansThenTheLeastRecentlyUsed) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("nanochat-prune-{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path model_a = dir / "a.gguf", model_b = dir / "b.gguf", model_c = dir / "c.gguf";
  for (const auto& m : {model_a, model_b, model_c}) std::ofstream(m) << "model";
  const std::vector<std::uint8_t> blob(100000, 7);
  const std::vector<std::span<const std::uint8_t>> blobs = {blob};
  const auto write = [&](const std::string& name, const fs::path& model, int age_hours) {
    fs::path p = dir / fmt::format("{}-{}.bin", name, cpu_info().signature());
    WeightCache::write(p, "nanochat repacked weights, packing 1\nfile " + model.string() + "\n",
                       blobs);
    fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::hours(age_hours));
    return p;
  };
  const fs::path gone = write("gone", dir / "deleted.gguf", 1);
  const fs::path oldest = write("oldest", model_a, 30);
  const fs::path older = write("older", model_b, 20);
  const fs::path kept = write("kept", model_c, 10);
  const fs::path newest = write("newest", model_a, 40);  // the one just written (keep)
  // Not orphans: another CPU's file (a shared folder), a model on a disk that is not mounted.
  const fs::path foreign = dir / "foreign-OtherCPU.bin";
  WeightCache::write(foreign, "nanochat repacked weights, packing 1\nfile /nonexistent/x.gguf\n",
                     blobs);
  const fs::path unmounted = write("unmounted", "/media/not-mounted/model.gguf", 0);
  const fs::path link = dir / fmt::format("link-{}.bin", cpu_info().signature());
  fs::create_symlink(kept, link);  // links are neither counted nor removed
  std::ofstream(dir / "notes.bin") << "not a cache file";
  std::ofstream(dir / ".x.bin.tmp-abc123") << "a temporary";
  const std::uint64_t one = fs::file_size(kept);

  // A budget for five files: the orphan goes first, then the oldest of the rest.
  auto removed = WeightCache::prune(dir, newest, 5 * one);
  std::sort(removed.begin(), removed.end());
  std::vector<fs::path> want = {gone, oldest};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(removed, want);
  for (const auto& p : {older, kept, newest, foreign, unmounted}) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(dir / "notes.bin"));
  EXPECT_TRUE(fs::exists(dir / ".x.bin.tmp-abc123"));

  // Within the budget nothing moves; a budget below the kept file's size leaves only it.
  EXPECT_TRUE(WeightCache::prune(dir, newest, 10 * one).empty());
  removed = WeightCache::prune(dir, newest, 1);
  EXPECT_EQ(removed.size(), 4u);
  EXPECT_TRUE(fs::exists(newest));
  EXPECT_FALSE(fs::exists(older));
  EXPECT_FALSE(fs::exists(kept));
  EXPECT_TRUE(fs::is_symlink(link));
  // A missing folder is nothing to do.
  EXPECT_TRUE(WeightCache::prune(dir / "missing", newest, 1).empty());
  fs::remove_all(dir);
}

TEST(WeightCache, BudgetFromTheEnvironment) {
  ::unsetenv("NANOCHAT_WEIGHT_CACHE_MAX_GB");
  EXPECT_EQ(WeightCache::budget_from_env(), std::uint64_t{8} << 30);
  ::setenv("NANOCHAT_WEIGHT_CACHE_MAX_GB", "0.5", 1);
  EXPECT_EQ(WeightCache::budget_from_env(), std::uint64_t{1} << 29);
  for (const char* bad : {"-1", "0", "lots", "2x"}) {
    ::setenv("NANOCHAT_WEIGHT_CACHE_MAX_GB", bad, 1);
    EXPECT_EQ(WeightCache::budget_from_env(), std::uint64_t{8} << 30) << bad;
  }
  ::unsetenv("NANOCHAT_WEIGHT_CACHE_MAX_GB");
}

// A head in a block type with head kernels streams the file's own blocks per token, not a Q8_0
// copy (which would give logits close enough to pass the reference comparison above): the
// model's bytes per token differ from the Q8_0 head's by exactly the head tensors' sizes.
TEST(Model, BlockHeadsStreamTheirOwnBytes) {
  const ModelConfig c = tiny_config(1, FfnActivation::kSwiGlu, false, false);
  const auto bytes_with = [&](gguf::TensorType head, std::uint64_t& head_bytes) {
    RandomModelOptions o;
    o.output_type = head;
    const fs::path path = write_model(c, o, "block-head");
    const auto file = gguf::GgufFile::open(path);
    head_bytes = file.find_tensor(tensors::kOutput)->bytes;
    kernels::KernelContext ctx(quiet_kernels(1));
    const std::size_t bytes = Model::load(file, ctx)->bytes_per_token();
    fs::remove(path);
    return bytes;
  };
  std::uint64_t q8_bytes = 0;
  const std::size_t with_q8 = bytes_with(gguf::TensorType::kQ8_0, q8_bytes);
  for (const kernels::KQuantType type : kernels::kKQuantTypes) {
    std::uint64_t head_bytes = 0;
    const std::size_t with_block =
        bytes_with(static_cast<gguf::TensorType>(kernels::kquant_ggml_type(type)), head_bytes);
    EXPECT_EQ(head_bytes, 300u * 256 /
                              static_cast<std::uint64_t>(kernels::kquant_block_weights(type)) *
                              static_cast<std::uint64_t>(kernels::kquant_block_bytes(type)))
        << kernels::kquant_name(type);
    EXPECT_EQ(with_block + q8_bytes, with_q8 + head_bytes) << kernels::kquant_name(type);
  }
}

TEST(Model, SameResultsAtAnyThreadCount) {
  const fs::path path =
      write_model(tiny_config(2, FfnActivation::kSwiGlu, true, false), {}, "threads");
  const auto file = gguf::GgufFile::open(path);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    kernels::KernelContext ctx(quiet_kernels(threads));
    auto model = Model::load(file, ctx);
    KvCache cache(model->config(), 8);
    std::vector<float> logits;
    model->forward(std::vector<TokenId>{1, 2, 3, 4}, cache, logits);
    if (first.empty()) {
      first = logits;
    } else {
      EXPECT_EQ(logits, first) << threads << " threads";
    }
  }
  fs::remove(path);
}

// Prefill runs attention over runs of up to 64 rows of one sequence (kernels::attention_rows).
// A 150-token prompt in one piece, in chunks that cut those runs elsewhere, and beside another
// sequence in one batch gives every position the same logits, bit for bit, and the same cache.
TEST(Model, LongPromptsGiveTheSameLogitsWholeChunkedAndBatched) {
  ModelConfig config = tiny_config(1, FfnActivation::kSwiGlu, false, false);
  config.context_length = 192;
  const fs::path path = write_model(config, {}, "long");
  const auto file = gguf::GgufFile::open(path);
  kernels::KernelContext ctx(quiet_kernels(2));
  auto model = Model::load(file, ctx);
  std::vector<TokenId> tokens(150);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 37 % 300);
  const std::size_t V = 300;
  KvCache whole(model->config(), 160);
  std::vector<float> all;
  model->forward(tokens, whole, all, true);
  ASSERT_EQ(all.size(), tokens.size() * V);
  // Chunks of 70, 1 and 79 tokens.
  KvCache chunked(model->config(), 160);
  std::vector<float> part, pieces;
  for (const auto& [first, count] :
       {std::pair<std::size_t, std::size_t>{0, 70}, {70, 1}, {71, 79}}) {
    model->forward(std::span(tokens).subspan(first, count), chunked, part, true);
    pieces.insert(pieces.end(), part.begin(), part.end());
  }
  EXPECT_EQ(pieces, all) << "chunked";
  for (std::int64_t layer = 0; layer < config.n_layers; ++layer) {
    const std::size_t n = tokens.size() * static_cast<std::size_t>(config.kv_dim());
    EXPECT_TRUE(std::equal(whole.keys(layer), whole.keys(layer) + n, chunked.keys(layer)));
    EXPECT_TRUE(std::equal(whole.values(layer), whole.values(layer) + n, chunked.values(layer)));
  }
  // The last 100 tokens beside a short sequence, after the first 50 alone.
  KvCache late(model->config(), 160), other(model->config(), 160);
  model->forward(std::span(tokens).first(50), late, part);
  const std::vector<TokenId> short_one = {3, 1, 4};
  const std::vector<Model::Segment> segments = {{short_one, &other, true},
                                                {std::span(tokens).subspan(50), &late, true}};
  ForwardBuffers buffers;
  std::vector<float> batched;
  model->forward_batch(segments, buffers, batched);
  ASSERT_EQ(batched.size(), (3 + 100) * V);
  EXPECT_TRUE(std::equal(batched.begin() + 3 * V, batched.end(), all.begin() + 50 * V))
      << "batched";
  fs::remove(path);
}

TEST(Model, ErrorsNameTheProblem) {
  const fs::path path =
      write_model(tiny_config(1, FfnActivation::kSwiGlu, false, false), {}, "errors");
  const auto file = gguf::GgufFile::open(path);
  kernels::KernelContext ctx(quiet_kernels(1));
  auto model = Model::load(file, ctx);
  KvCache cache(model->config(), 4);
  std::vector<float> logits;
  EXPECT_THROW(model->forward(std::vector<TokenId>{1, 2, 3, 4, 5}, cache, logits), UsageError);
  EXPECT_THROW(model->forward(std::vector<TokenId>{300}, cache, logits), Error);
  const auto vocab = gguf::GgufFile::open(fs::path(NANOCHAT_SHARED_DIR) /
                                          "testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  try {
    (void)Model::load(vocab, ctx);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'gpt2'"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

// Rewrites `src` with `edit` applied to its metadata and tensors (for files other tools write).
fs::path rewrite(const fs::path& src, const std::string& name,
                 const std::function<void(gguf::GgufWriter&, const gguf::GgufFile&)>& edit) {
  const auto in = gguf::GgufFile::open(src);
  gguf::GgufWriter w;
  for (const auto& [key, value] : in.metadata()) w.set(key, value);
  edit(w, in);
  fs::path out = fs::path(src).replace_filename(name);
  w.write(out);
  return out;
}

void copy_tensors(gguf::GgufWriter& w, const gguf::GgufFile& in, const std::string& skip) {
  for (const auto& t : in.tensors()) {
    if (t.name != skip) w.add_tensor(t.name, t.type.id, t.dims, in.tensor_data(t));
  }
}

TEST(Model, ForeignFilesNameWhatNanochatCannotRun) {
  ModelConfig c = tiny_config(1, FfnActivation::kSwiGlu, false, false);
  c.architecture = "llama";
  RandomModelOptions o;
  o.output_type = gguf::TensorType::kF16;
  const fs::path base = write_model(c, o, "foreign");
  kernels::KernelContext ctx(quiet_kernels(1));
  auto expect_error = [&](const fs::path& path, const std::string& want) {
    const auto file = gguf::GgufFile::open(path);
    try {
      (void)Model::load(file, ctx);
      ADD_FAILURE() << "loaded " << path;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    fs::remove(path);
  };
  // An F16 linear layer (a llama file that is not ternary).
  expect_error(rewrite(base, "f16-layer.gguf",
                       [](gguf::GgufWriter& w, const gguf::GgufFile& in) {
                         copy_tensors(w, in, tensors::block(0, tensors::kAttnQ));
                         std::vector<std::uint8_t> half(256 * 256 * 2, 0);
                         w.add_tensor(tensors::block(0, tensors::kAttnQ), gguf::TensorType::kF16,
                                      {256, 256}, half);
                       }),
               "tensor 'blk.0.attn_q.weight' has type F16; nanochat's linear layers are ternary");
  // Partial rotary embeddings.
  expect_error(rewrite(base, "partial-rope.gguf",
                       [](gguf::GgufWriter& w, const gguf::GgufFile& in) {
                         w.set("llama.rope.dimension_count", gguf::Value(std::uint32_t{32}));
                         copy_tensors(w, in, "");
                       }),
               "llama.rope.dimension_count is 32");
  // A missing layer.
  expect_error(rewrite(base, "missing.gguf",
                       [](gguf::GgufWriter& w, const gguf::GgufFile& in) {
                         copy_tensors(w, in, tensors::block(1, tensors::kFfnDown));
                       }),
               "tensor 'blk.1.ffn_down.weight' is missing");
  // An architecture nanochat does not run.
  expect_error(rewrite(base, "qwen.gguf",
                       [](gguf::GgufWriter& w, const gguf::GgufFile& in) {
                         w.set("general.architecture", gguf::Value("qwen2"));
                         copy_tensors(w, in, "");
                       }),
               "architecture 'qwen2' is not one nanochat runs");
  // The file itself loads, and without output.weight the head is the embedding.
  const auto tied_path = rewrite(
      base, "tied.gguf",
      [](gguf::GgufWriter& w, const gguf::GgufFile& in) { copy_tensors(w, in, tensors::kOutput); });
  {
    const auto file = gguf::GgufFile::open(tied_path);
    EXPECT_TRUE(ModelConfig::from_gguf(file).tied_embeddings);
    EXPECT_NO_THROW((void)Model::load(file, ctx));
  }
  fs::remove(tied_path);
  fs::remove(base);
}

// Rewrites `src` with the bytes of tensor `name` edited by `edit`.
fs::path edit_tensor(const fs::path& src, const std::string& out, const std::string& name,
                     const std::function<void(std::vector<std::uint8_t>&)>& edit) {
  return rewrite(src, out, [&](gguf::GgufWriter& w, const gguf::GgufFile& in) {
    copy_tensors(w, in, name);
    const gguf::TensorInfo& t = *in.find_tensor(name);
    const auto data = in.tensor_data(t);
    std::vector<std::uint8_t> bytes(data.begin(), data.end());
    edit(bytes);
    w.add_tensor(name, t.type.id, t.dims, bytes);
  });
}

// Values a file may hold that the loader used to accept silently (or crash on): each is an
// error naming the file and the key or tensor, before any of it is used.
TEST(Model, HostileValuesNameTheFileAndTheKeyOrTensor) {
  const fs::path base =
      write_model(tiny_config(2, FfnActivation::kSwiGlu, false, false), {}, "hostile");
  kernels::KernelContext ctx(quiet_kernels(1));
  auto expect_error = [&](const fs::path& path, const std::vector<std::string>& want) {
    const auto file = gguf::GgufFile::open(path);
    try {
      (void)Model::load(file, ctx);
      ADD_FAILURE() << "loaded " << path;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(path.string() + ": "), std::string::npos) << e.what();
      for (const auto& w : want) {
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
      }
    }
    fs::remove(path);
  };
  auto with_key = [&](const std::string& key, gguf::Value v) {
    return rewrite(base, "key.gguf", [&](gguf::GgufWriter& w, const gguf::GgufFile& in) {
      w.set(key, v);
      copy_tensors(w, in, "");
    });
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  // Sizes: checked against a bound before anything is multiplied, with the memory they would
  // take; a value wider than the field it goes to is not truncated.
  expect_error(with_key("nanochat.context_length", gguf::Value(std::uint64_t{1} << 56)),
               {"nanochat.context_length is 72057594037927936", "KV cache would need 128.0 EiB"});
  expect_error(with_key("nanochat.context_length", gguf::Value(std::int64_t{(1ull << 63) - 1})),
               {"nanochat.context_length is 9223372036854775807"});
  expect_error(with_key("nanochat.mhc.n_streams", gguf::Value((std::uint64_t{1} << 32) + 1)),
               {"nanochat.mhc.n_streams is 4294967297"});
  expect_error(with_key("nanochat.block_count", gguf::Value(std::uint64_t{1} << 40)),
               {"nanochat.block_count is 1099511627776"});
  // Hyperparameters that are not finite or not positive.
  expect_error(with_key("nanochat.rope.freq_base", gguf::Value(inf)),
               {"nanochat.rope.freq_base is inf"});
  expect_error(with_key("nanochat.rope.freq_base", gguf::Value(1e300)),
               {"nanochat.rope.freq_base is inf"});
  expect_error(with_key("nanochat.attention.layer_norm_rms_epsilon", gguf::Value(inf)),
               {"nanochat.attention.layer_norm_rms_epsilon is inf"});
  expect_error(with_key("nanochat.attention.layer_norm_rms_epsilon", gguf::Value(nan)),
               {"nanochat.attention.layer_norm_rms_epsilon is nan"});
  expect_error(with_key("nanochat.attention.layer_norm_rms_epsilon", gguf::Value(-1e-5f)),
               {"layer_norm_rms_epsilon is -1e-05"});
  // Tensor values: norm gains and mHC parameters finite.
  const std::string norm = tensors::block(1, tensors::kFfnNorm);
  expect_error(edit_tensor(base, "norm.gguf", norm,
                           [&](std::vector<std::uint8_t>& b) { std::memcpy(&b[8], &nan, 4); }),
               {"tensor '" + norm + "' holds nan at element 2"});
  const std::string mhc = tensors::block(0, tensors::kAttnMhc);
  expect_error(edit_tensor(base, "mhc.gguf", mhc,
                           [&](std::vector<std::uint8_t>& b) { std::memcpy(&b[0], &inf, 4); }),
               {"tensor '" + mhc + "' holds inf"});
  // TQ2_0 blocks (66 bytes: 64 of codes, an fp16 scale): each bad scale named as what it is.
  const std::string q = tensors::block(0, tensors::kAttnQ);
  auto with_scale = [&](float scale) {
    return edit_tensor(base, "scale.gguf", q, [&](std::vector<std::uint8_t>& b) {
      const std::uint16_t h = fp32_to_fp16(scale);
      std::memcpy(&b[66 + 64], &h, 2);  // row 1's block
    });
  };
  expect_error(with_scale(nan), {"tensor '" + q + "' row 1: a block scale is NaN"});
  expect_error(with_scale(inf), {"tensor '" + q + "' row 1: a block scale is infinite"});
  expect_error(with_scale(-0.5f), {"row 1: a block scale is negative (-0.5)"});
  expect_error(with_scale(0.0f), {"row 1: a block scale is 0 but its weights are not all 0"});
  const std::string down = tensors::block(0, tensors::kFfnDown);  // rows of two blocks
  expect_error(edit_tensor(base, "differ.gguf", down,
                           [](std::vector<std::uint8_t>& b) {
                             const std::uint16_t h = fp32_to_fp16(0.125f);
                             std::memcpy(&b[66 + 64], &h, 2);
                           }),
               {"tensor '" + down + "' row 0: its blocks have different scales"});
  expect_error(edit_tensor(base, "code3.gguf", q,
                           [](std::vector<std::uint8_t>& b) { b[66 * 3 + 5] = 0xff; }),
               {"tensor '" + q + "' row 3: TQ2_0 block 0 holds the 2-bit code 3"});
  fs::remove(base);
}

TEST(KvCache, SizesAreCheckedBeforeTheyAreMultiplied) {
  ModelConfig c = tiny_config(1, FfnActivation::kSwiGlu, false, false);
  c.source_file = "m.gguf";
  EXPECT_EQ(KvCache::resolve_capacity(c, 0), c.context_length);
  EXPECT_EQ(KvCache::resolve_capacity(c, 32), 32);
  EXPECT_EQ(KvCache(c, 0).capacity(), c.context_length);
  // From a flag: InvalidArgument for "context" (the CLI says -c), with the memory it would need.
  for (const std::int64_t huge : {std::int64_t{1} << 56, std::numeric_limits<std::int64_t>::max(),
                                  ModelConfig::kMaxContextLength + 1}) {
    try {
      (void)KvCache(c, huge);
      ADD_FAILURE() << huge;
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(e.parameter(), "context");
      EXPECT_EQ(e.value(), std::to_string(huge));
      EXPECT_NE(e.problem().find("its KV cache would need"), std::string::npos) << e.what();
    }
  }
  // From the file: a FormatError naming the file and the key, never "-c".
  c.n_layers = ModelConfig::kMaxLayers;
  c.dim = c.n_kv_heads = c.n_heads = ModelConfig::kMaxWidth / 2;
  c.context_length = ModelConfig::kMaxContextLength;
  try {
    (void)KvCache::resolve_capacity(c, 0);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("m.gguf: nanochat.context_length is 16777216: its KV "
                                         "cache would need"),
              std::string::npos)
        << e.what();
  }
}

// ---- bitnet.cpp's BitNet b1.58 2B4T layout (architecture bitnet-25) ----
// tests/data/bitnet25/ holds tiny models written exactly as bitnet.cpp writes
// ggml-model-i2_s.gguf (its README says what follows which part of bitnet.cpp): with an F16
// output.weight, as the file published now, and tied (--tied), as first published.

fs::path bitnet25_file(const char* name) {
  return fs::path(NANOCHAT_TEST_DATA) / "bitnet25" / name;
}

// The same model as a `bitnet-b1.58` file with TQ2_0 layers (a layout nanochat read before
// bitnet-25): every key under the other prefix, every I2_S tensor decoded and written as TQ2_0
// blocks that all carry the tensor's scale, everything else copied byte for byte.
fs::path as_bitnet_b158_tq2(const gguf::GgufFile& f, const std::string& name) {
  gguf::GgufWriter w;
  const std::string from = f.architecture() + ".";
  for (const auto& [key, v] : f.metadata()) {
    if (key == "general.architecture") {
      w.set(key, gguf::Value("bitnet-b1.58"));
    } else if (key.starts_with(from)) {
      w.set("bitnet-b1.58." + key.substr(from.size()), v);
    } else {
      w.set(key, v);
    }
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    if (!t.type.is(gguf::TensorType::kI2_S)) {
      w.add_tensor(t.name, t.type.id, t.dims, f.tensor_data(t));
      continue;
    }
    std::vector<std::int8_t> trits(t.elements());
    const float scale = ternary::decode_i2_s(f.tensor_data(t), trits);
    const std::vector<float> scales(trits.size() / ternary::kQkK, scale);
    std::vector<std::uint8_t> bytes(ternary::tq2_0_bytes(static_cast<std::int64_t>(trits.size())));
    ternary::encode_tq2_0(trits, scales, bytes);
    w.add_tensor(t.name, gguf::TensorType::kTQ2_0, t.dims, bytes);
  }
  fs::path path =
      fs::temp_directory_path() / fmt::format("nanochat-b25-{}-{}.gguf", ::getpid(), name);
  w.write(path);
  return path;
}

TEST(Bitnet25, ReadsTheLayoutBitnetCppWrites) {
  for (const bool tied : {false, true}) {
    const auto file = gguf::GgufFile::open(
        bitnet25_file(tied ? "bitnet25-tiny-tied.gguf" : "bitnet25-tiny.gguf"));
    const ModelConfig c = ModelConfig::from_gguf(file);
    EXPECT_EQ(c.architecture, "bitnet-25");
    EXPECT_EQ(c.ffn_activation, FfnActivation::kReluSquared);
    EXPECT_TRUE(c.sub_norms);
    EXPECT_EQ(c.rope_style, RopeStyle::kHalves);
    EXPECT_EQ(c.tied_embeddings, tied);
    EXPECT_EQ(c.rope_theta, 500000.0f);
    EXPECT_EQ(c.n_kv_heads, 1);
    // bitnet.cpp's tensor order: the checkpoint's names sorted (lm_head, embed_tokens, the
    // layers, norm), token_embd and output.weight in F16.
    const auto& ts = file.tensors();
    std::size_t i = 0;
    if (!tied) {
      EXPECT_EQ(ts[i].name, "output.weight");
      EXPECT_EQ(std::string(ts[i++].type.name), "F16");
    }
    EXPECT_EQ(ts[i].name, "token_embd.weight");
    EXPECT_EQ(std::string(ts[i++].type.name), "F16");
    EXPECT_EQ(ts[i++].name, "blk.0.attn_norm.weight");
    EXPECT_EQ(ts[i].name, "blk.0.ffn_down.weight");
    EXPECT_EQ(std::string(ts[i].type.name), "I2_S");
    EXPECT_EQ(ts[i].bytes, 256u * 256u / 4 + 32);  // n/4 + 32: the scale trailer
    EXPECT_EQ(ts.back().name, "output_norm.weight");
  }
}

TEST(Bitnet25, SameLogitsAsTheSameWeightsInTq2_0AndAsTheReference) {
  kernels::KernelContext ctx(quiet_kernels(2));
  const std::vector<TokenId> tokens = {296, 5, 17, 250, 3, 99, 42, 7};
  for (const char* name : {"bitnet25-tiny.gguf", "bitnet25-tiny-tied.gguf"}) {
    const auto file = gguf::GgufFile::open(bitnet25_file(name));
    const auto other = gguf::GgufFile::open(as_bitnet_b158_tq2(file, name));
    auto model = Model::load(file, ctx);
    auto model_tq2 = Model::load(other, ctx);
    const auto vocab = static_cast<std::size_t>(model->config().vocab_size);
    ASSERT_EQ(vocab, static_cast<std::size_t>(model_tq2->config().vocab_size));
    KvCache cache(model->config(), 16), cache_tq2(model_tq2->config(), 16);
    std::vector<float> got, want;
    model->forward(tokens, cache, got, true);
    model_tq2->forward(tokens, cache_tq2, want, true);
    const auto ref = reference_forward(file, tokens);
    ASSERT_EQ(got.size(), tokens.size() * vocab);
    ASSERT_EQ(want.size(), got.size());
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      double max_ref = 0, err_tq2 = 0, err_ref = 0;
      for (std::size_t i = 0; i < vocab; ++i) {
        const double g = got[t * vocab + i];
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[t][i])));
        err_tq2 = std::max(err_tq2, std::fabs(g - want[t * vocab + i]));
        err_ref = std::max(err_ref, std::fabs(g - ref[t][i]));
      }
      ASSERT_GT(max_ref, 0) << name;
      EXPECT_LE(err_tq2, 1e-3 * max_ref) << name << " position " << t << " vs TQ2_0";
      EXPECT_LE(err_ref, 1e-3 * max_ref) << name << " position " << t << " vs reference";
    }
    fs::remove(other.name());
  }
}

}  // namespace
}  // namespace nanochat::model
