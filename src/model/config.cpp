#include "nanochat/model/config.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/units.hpp"

namespace nanochat::model {

const char* ffn_activation_name(FfnActivation a) {
  return a == FfnActivation::kSwiGlu ? "swiglu" : "relu2";
}

namespace {

// Every architecture Model::load accepts, in the order error messages list them.
constexpr std::array<const char*, 5> kArchitectures = {"nanochat", "bitnet", "bitnet-b1.58",
                                                       "bitnet-25", "llama"};

// "nanochat, bitnet, ..., llama": the list in an unknown architecture's error.
std::string architecture_list() {
  std::string s;
  for (const char* a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a);
  return s;
}

}  // namespace

bool is_supported_architecture(const std::string& arch) {
  return std::find(kArchitectures.begin(), kArchitectures.end(), arch) != kArchitectures.end();
}

ModelConfig config_for_architecture(const std::string& arch) {
  ModelConfig c;
  c.architecture = arch;
  // bitnet-25 is bitnet.cpp's name for BitNet b1.58 2B4T (its llama.cpp fork runs it, like
  // bitnet-b1.58, with build_bitnet_158: squared ReLU, sub-norms, NeoX RoPE).
  if (arch == "bitnet" || arch == "bitnet-b1.58" || arch == "bitnet-25") {
    c.sub_norms = true;
    c.rope_style = RopeStyle::kHalves;
    c.ffn_activation = arch == "bitnet" ? FfnActivation::kSwiGlu : FfnActivation::kReluSquared;
  }
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  const std::string& a = architecture;
  if (!is_supported_architecture(a)) {
    fail<FormatError>("{}: architecture '{}' is not one nanochat runs ({})", source,
                      a.empty() ? "(none)" : a, architecture_list());
  }
  // Every size in range before any product of them is formed.
  auto in_range = [&](std::int64_t v, const char* key, std::int64_t max) {
    if (v <= 0) fail<FormatError>("{}: {}.{} is {}, it must be positive", source, a, key, v);
    if (v > max) {
      fail<FormatError>("{}: {}.{} is {}, more than the {} nanochat allows", source, a, key, v,
                        max);
    }
  };
  in_range(dim, "embedding_length", kMaxWidth);
  in_range(n_layers, "block_count", kMaxLayers);
  in_range(n_heads, "attention.head_count", kMaxWidth);
  in_range(n_kv_heads, "attention.head_count_kv", kMaxWidth);
  in_range(ffn_dim, "feed_forward_length", kMaxWidth);
  in_range(vocab_size, "vocab_size", kMaxVocab);
  if (context_length <= 0) {
    fail<FormatError>("{}: {} is {}, it must be positive", source, context_key(), context_length);
  }
  if (dim % n_heads != 0 || head_dim() % 2 != 0) {
    fail<FormatError>("{}: embedding_length {} must split into {} heads of an even size", source,
                      dim, n_heads);
  }
  if (n_heads % n_kv_heads != 0) {
    fail<FormatError>("{}: {} heads cannot share {} key/value heads evenly", source, n_heads,
                      n_kv_heads);
  }
  if (context_length > kMaxContextLength) {
    fail<FormatError>(
        "{}: {} is {}, more than the {} tokens nanochat supports (its KV cache would need {})",
        source, context_key(), context_length, kMaxContextLength,
        format_bytes(kv_cache_bytes(context_length)));
  }
  if (mhc_streams != 1 && mhc_streams != 2 && mhc_streams != 4) {
    fail<FormatError>("{}: nanochat.mhc.n_streams is {}; use 1, 2 or 4", source, mhc_streams);
  }
  if (a != "nanochat" && mhc_streams != 1) {
    fail<FormatError>("{}: architecture '{}' has one residual stream; mHC-lite needs 'nanochat'",
                      source, a);
  }
  const ModelConfig fixed = config_for_architecture(a);
  if (a != "nanochat" && (sub_norms != fixed.sub_norms || rope_style != fixed.rope_style)) {
    fail<FormatError>("{}: architecture '{}' {} sub-norms; use 'nanochat' for other layouts",
                      source, a, fixed.sub_norms ? "always has" : "has no");
  }
  if (a == "llama" && ffn_activation != FfnActivation::kSwiGlu) {
    fail<FormatError>("{}: architecture 'llama' uses SwiGLU; use 'nanochat' for relu2", source);
  }
  // NaN fails every comparison, so each test is written to be false for it.
  if (!(norm_eps > 0 && norm_eps < 1)) {
    fail<FormatError>(
        "{}: {}.attention.layer_norm_rms_epsilon is {}; it must be a small positive number "
        "(typically 1e-5 or 1e-6)",
        source, a, norm_eps);
  }
  if (!(rope_theta > 0 && std::isfinite(rope_theta))) {
    fail<FormatError>(
        "{}: {}.rope.freq_base is {}; it must be a finite positive number "
        "(typically 10000 or 500000)",
        source, a, rope_theta);
  }
}

double ModelConfig::kv_cache_bytes(std::int64_t tokens) const {
  const double kv = n_heads > 0 ? static_cast<double>(dim) / static_cast<double>(n_heads) *
                                      static_cast<double>(n_kv_heads)
                                : 0.0;
  return 2.0 * static_cast<double>(n_layers) * static_cast<double>(tokens) * kv * sizeof(float);
}

namespace {

FfnActivation parse_activation(const gguf::GgufFile& f, const std::string& key,
                               const std::string& name) {
  if (name == "swiglu" || name == "silu" || name == "swish") return FfnActivation::kSwiGlu;
  if (name == "relu2" || name == "relu_sqr" || name == "relu_squared") {
    return FfnActivation::kReluSquared;
  }
  fail<FormatError>("{}: {} is '{}'; nanochat runs swiglu (silu) or relu2", f.name(), key, name);
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const gguf::GgufFile& f) {
  const std::string arch = f.architecture();
  if (!is_supported_architecture(arch)) {
    fail<FormatError>("{}: architecture '{}' is not one nanochat runs ({})", f.name(),
                      arch.empty() ? "(none)" : arch, architecture_list());
  }
  ModelConfig c = config_for_architecture(arch);
  const std::string prefix = arch + ".";
  auto need = [&](const char* key) -> std::int64_t {
    const auto v = f.get_int(prefix + key);
    if (v) return *v;
    // The same key under another prefix: the architecture and the keys disagree.
    const std::string suffix = std::string(".") + key;
    for (const auto& [other, value] : f.metadata()) {
      if (other.size() > suffix.size() && other.ends_with(suffix) &&
          !other.starts_with("general.") && !other.starts_with("tokenizer.")) {
        fail<FormatError>(
            "{}: missing {}{} — the file has '{}' instead, but general.architecture is '{}' "
            "and names the prefix of every hyperparameter key",
            f.name(), prefix, key, other, arch);
      }
    }
    fail<FormatError>("{}: missing {}{}", f.name(), prefix, key);
  };
  c.dim = need("embedding_length");
  c.n_layers = need("block_count");
  c.n_heads = need("attention.head_count");
  c.n_kv_heads = f.get_int(prefix + "attention.head_count_kv").value_or(c.n_heads);
  c.ffn_dim = need("feed_forward_length");
  c.context_length = need("context_length");
  if (const auto v = f.get_int(prefix + "vocab_size")) {
    c.vocab_size = *v;
  } else if (const gguf::TensorInfo* emb = f.find_tensor(tensors::kEmbedding);
             emb != nullptr && emb->dims.size() == 2) {
    c.vocab_size = static_cast<std::int64_t>(emb->dims[1]);
  } else {
    fail<FormatError>("{}: missing {}vocab_size and {}", f.name(), prefix, tensors::kEmbedding);
  }
  // As float: a double beyond float's range becomes infinite (casting it would be undefined)
  // and, like NaN, fails validate().
  const auto as_float = [](double d) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    if (std::fabs(d) > std::numeric_limits<float>::max()) return d > 0 ? kInf : -kInf;
    return static_cast<float>(d);
  };
  c.norm_eps = as_float(f.get_float(prefix + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = as_float(f.get_float(prefix + "rope.freq_base").value_or(10000.0));
  if (const auto rot = f.get_int(prefix + "rope.dimension_count");
      rot && c.n_heads > 0 && *rot != c.dim / c.n_heads) {
    fail<FormatError>("{}: {}rope.dimension_count is {}; nanochat rotates whole heads ({})",
                      f.name(), prefix, *rot, c.dim / c.n_heads);
  }
  if (const auto scaling = f.get_string(prefix + "rope.scaling.type");
      scaling && *scaling != "none") {
    fail<FormatError>("{}: {}rope.scaling.type '{}' is not supported yet", f.name(), prefix,
                      *scaling);
  }
  if (arch == "nanochat") {
    const std::string act = f.get_string("nanochat.ffn_activation").value_or("swiglu");
    c.ffn_activation = parse_activation(f, "nanochat.ffn_activation", act);
    c.sub_norms = f.get_bool("nanochat.sub_norms").value_or(false);
    c.tied_embeddings = f.get_bool("nanochat.tied_embeddings").value_or(false);
    // Checked before narrowing: 2^32 + 1 must not become 1.
    const std::int64_t streams = f.get_int("nanochat.mhc.n_streams").value_or(1);
    if (streams != 1 && streams != 2 && streams != 4) {
      fail<FormatError>("{}: nanochat.mhc.n_streams is {}; use 1, 2 or 4", f.name(), streams);
    }
    c.mhc_streams = static_cast<int>(streams);
  } else {
    for (const char* key : {"hidden_act", "hidden_activation"}) {
      if (const auto act = f.get_string(prefix + key)) {
        c.ffn_activation = parse_activation(f, prefix + key, *act);
      }
    }
    // llama.cpp's loaders fall back to the embedding when output.weight is absent.
    c.tied_embeddings = f.find_tensor(tensors::kOutput) == nullptr;
  }
  c.source_file = f.name();
  c.validate(f.name());
  return c;
}

void ModelConfig::write_gguf(gguf::GgufWriter& w) const {
  using gguf::Value;
  const std::string p = architecture + ".";
  auto u32 = [](std::int64_t v) { return Value(static_cast<std::uint32_t>(v)); };
  w.set(p + "context_length", u32(context_length));
  w.set(p + "embedding_length", u32(dim));
  w.set(p + "block_count", u32(n_layers));
  w.set(p + "feed_forward_length", u32(ffn_dim));
  w.set(p + "attention.head_count", u32(n_heads));
  w.set(p + "attention.head_count_kv", u32(n_kv_heads));
  w.set(p + "attention.layer_norm_rms_epsilon", Value(norm_eps));
  w.set(p + "rope.freq_base", Value(rope_theta));
  w.set(p + "rope.dimension_count", u32(head_dim()));
  w.set(p + "vocab_size", u32(vocab_size));
  if (architecture == "nanochat") {
    w.set("nanochat.ffn_activation", Value(ffn_activation_name(ffn_activation)));
    w.set("nanochat.sub_norms", Value(sub_norms));
    w.set("nanochat.tied_embeddings", Value(tied_embeddings));
    w.set("nanochat.mhc.n_streams", u32(mhc_streams));
  } else if (architecture == "bitnet" && ffn_activation == FfnActivation::kReluSquared) {
    w.set("bitnet.hidden_act", Value("relu2"));
  }
}

}  // namespace nanochat::model
