#include "nanochat/model/random_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "nanochat/gguf/writer.hpp"
#include "nanochat/kernels/kquant.hpp"
#include "nanochat/kernels/q8.hpp"
#include "nanochat/kernels/vec.hpp"
#include "nanochat/mhc/mhc.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::model {
namespace {

std::span<const std::uint8_t> as_bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const std::uint8_t*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

void write_random_model(const ModelConfig& c, const RandomModelOptions& o,
                        const std::function<void(gguf::GgufWriter&)>& add_tokenizer,
                        const std::filesystem::path& path) {
  c.validate("random model");
  using gguf::TensorType;
  if (o.ternary_type != TensorType::kTQ1_0 && o.ternary_type != TensorType::kTQ2_0) {
    fail("random models use TQ1_0 or TQ2_0");
  }
  for (const TensorType type : {o.embedding_type, o.output_type.value_or(TensorType::kF32)}) {
    kernels::KQuantType kq{};
    if (type != TensorType::kF32 && type != TensorType::kF16 && type != TensorType::kBF16 &&
        type != TensorType::kQ8_0 && !kernels::kquant_from_ggml(gguf::type_id(type), kq)) {
      fail(
          "random models store embeddings and heads as F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, "
          "Q5_1, Q4_K, Q5_K or Q6_K, not type {}",
          gguf::type_id(type));
    }
  }
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> trit(-1, 1);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);

  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value(c.architecture));
  w.set("general.name", gguf::Value(fmt::format("{}-random-{}", c.architecture, o.seed)));
  c.write_gguf(w);
  add_tokenizer(w);

  auto vec = [&](std::int64_t n, float mean, float spread) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = mean + spread * normal(rng);
    return v;
  };
  auto f32 = [&](const std::string& name, const std::vector<float>& v) {
    w.add_tensor(name, TensorType::kF32, {v.size()}, as_bytes(v));
  };
  auto ternary = [&](const std::string& name, std::int64_t in, std::int64_t out) {
    if (in % 256 != 0) fail("random model: {} has rows of {}, not a multiple of 256", name, in);
    std::vector<std::int8_t> trits(static_cast<std::size_t>(in * out));
    for (auto& t : trits) t = static_cast<std::int8_t>(trit(rng));
    // One scale per tensor, ~ 1/sqrt(fan-in) so activations keep their size.
    const float scale =
        fp16_to_fp32(fp32_to_fp16((0.5f + uniform(rng)) / std::sqrt(static_cast<float>(in))));
    if (o.scale_tensors) f32(tensors::scale_of(name), {scale});
    w.add_tensor(name, o.ternary_type,
                 {static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(out)},
                 encode_ternary(o.ternary_type, trits, o.scale_tensors ? 1.0f : scale));
  };

  // A float tensor [cols, rows] in `type` (F32, F16, BF16, Q8_0, or a type with head kernels).
  auto float_tensor = [&](const std::string& name, TensorType type, std::int64_t cols,
                          std::int64_t rows, const std::vector<float>& v) {
    const std::vector<std::uint64_t> dims = {static_cast<std::uint64_t>(cols),
                                             static_cast<std::uint64_t>(rows)};
    std::vector<std::uint8_t> bytes;
    if (type == TensorType::kF32) {
      w.add_tensor(name, type, dims, as_bytes(v));
      return;
    }
    kernels::KQuantType kq{};
    if (type == TensorType::kQ8_0) {
      bytes.resize(v.size() / 32 * 34);
      kernels::quantize_row_q8_0(v, bytes);
    } else if (kernels::kquant_from_ggml(gguf::type_id(type), kq)) {
      const std::int64_t block = kernels::kquant_block_weights(kq);
      if (cols % block != 0) {
        fail("random model: a {} {} needs rows of a multiple of {}", kernels::kquant_name(kq), name,
             block);
      }
      bytes.resize(v.size() / static_cast<std::size_t>(block) *
                   static_cast<std::size_t>(kernels::kquant_block_bytes(kq)));
      kernels::quantize_row_kquant(kq, v, bytes);
    } else {
      std::vector<std::uint16_t> half(v.size());
      if (type == TensorType::kF16) {
        for (std::size_t i = 0; i < v.size(); ++i) half[i] = fp32_to_fp16(v[i]);
      } else {
        kernels::to_bf16(v.data(), 1, static_cast<std::int64_t>(v.size()),
                         static_cast<std::int64_t>(v.size()), half.data());
      }
      bytes.resize(v.size() * 2);
      std::memcpy(bytes.data(), half.data(), bytes.size());
    }
    w.add_tensor(name, type, dims, bytes);
  };
  float_tensor(tensors::kEmbedding, o.embedding_type, c.dim, c.vocab_size,
               vec(c.vocab_size * c.dim, 0.0f, 1.0f));
  const int n = c.mhc_streams;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const auto blk = [l](const char* part) { return tensors::block(l, part); };
    f32(blk(tensors::kAttnNorm), vec(c.dim, 1.0f, 0.1f));
    ternary(blk(tensors::kAttnQ), c.dim, c.dim);
    ternary(blk(tensors::kAttnK), c.dim, c.kv_dim());
    ternary(blk(tensors::kAttnV), c.dim, c.kv_dim());
    ternary(blk(tensors::kAttnOutput), c.dim, c.dim);
    f32(blk(tensors::kFfnNorm), vec(c.dim, 1.0f, 0.1f));
    ternary(blk(tensors::kFfnGate), c.dim, c.ffn_dim);
    ternary(blk(tensors::kFfnUp), c.dim, c.ffn_dim);
    ternary(blk(tensors::kFfnDown), c.ffn_dim, c.dim);
    if (c.sub_norms) {
      f32(blk(tensors::kAttnSubNorm), vec(c.dim, 1.0f, 0.1f));
      f32(blk(tensors::kFfnSubNorm), vec(c.ffn_dim, 1.0f, 0.1f));
    }
    if (n > 1) {
      for (const char* which : {tensors::kAttnMhc, tensors::kFfnMhc}) {
        mhc::MhcParams m;
        m.n = n;
        for (int i = 0; i < n; ++i)
          m.h_pre.push_back((0.5f + uniform(rng)) / static_cast<float>(n));
        for (int i = 0; i < n; ++i) m.h_post.push_back(0.5f + uniform(rng));
        for (std::size_t i = 0; i < mhc::logit_count(n); ++i) {
          m.res_logits.push_back(2.0f * normal(rng));
        }
        f32(blk(which), mhc::pack(m));
      }
    }
  }
  f32(tensors::kOutputNorm, vec(c.dim, 1.0f, 0.1f));
  if (!c.tied_embeddings && o.output_type) {
    // ~ N(0, 1/dim) so logits have unit size.
    float_tensor(tensors::kOutput, *o.output_type, c.dim, c.vocab_size,
                 vec(c.vocab_size * c.dim, 0.0f, 1.0f / std::sqrt(static_cast<float>(c.dim))));
  } else if (!c.tied_embeddings) {
    ternary(tensors::kOutput, c.dim, c.vocab_size);
  }
  w.write(path);
}

}  // namespace nanochat::model
