#include "nanochat/model/config.hpp"

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::model {

const char* ffn_activation_name(FfnActivation a) {
  return a == FfnActivation::kSwiGlu ? "swiglu" : "relu2";
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](std::int64_t v, const char* key) {
    if (v <= 0) fail<FormatError>("{}: nanochat.{} is {}, it must be positive", source, key, v);
  };
  positive(dim, "embedding_length");
  positive(n_layers, "block_count");
  positive(n_heads, "attention.head_count");
  positive(n_kv_heads, "attention.head_count_kv");
  positive(ffn_dim, "feed_forward_length");
  positive(vocab_size, "vocab_size");
  positive(context_length, "context_length");
  if (dim % n_heads != 0 || head_dim() % 2 != 0) {
    fail<FormatError>("{}: embedding_length {} must split into {} heads of an even size", source,
                      dim, n_heads);
  }
  if (n_heads % n_kv_heads != 0) {
    fail<FormatError>("{}: {} heads cannot share {} key/value heads evenly", source, n_heads,
                      n_kv_heads);
  }
  if (mhc_streams != 1 && mhc_streams != 2 && mhc_streams != 4) {
    fail<FormatError>("{}: nanochat.mhc.n_streams is {}; use 1, 2 or 4", source, mhc_streams);
  }
  if (!(norm_eps > 0) || !(rope_theta > 0)) {
    fail<FormatError>("{}: layer_norm_rms_epsilon and rope.freq_base must be positive", source);
  }
}

ModelConfig ModelConfig::from_gguf(const gguf::GgufFile& f) {
  ModelConfig c;
  auto need = [&](const char* key) -> std::int64_t {
    const auto v = f.get_int(std::string("nanochat.") + key);
    if (!v) fail<FormatError>("{}: missing nanochat.{}", f.name(), key);
    return *v;
  };
  c.dim = need("embedding_length");
  c.n_layers = need("block_count");
  c.n_heads = need("attention.head_count");
  c.n_kv_heads = f.get_int("nanochat.attention.head_count_kv").value_or(c.n_heads);
  c.ffn_dim = need("feed_forward_length");
  c.context_length = need("context_length");
  c.vocab_size = need("vocab_size");
  c.norm_eps =
      static_cast<float>(f.get_float("nanochat.attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = static_cast<float>(f.get_float("nanochat.rope.freq_base").value_or(10000.0));
  const std::string act = f.get_string("nanochat.ffn_activation").value_or("swiglu");
  if (act == "swiglu") {
    c.ffn_activation = FfnActivation::kSwiGlu;
  } else if (act == "relu2") {
    c.ffn_activation = FfnActivation::kReluSquared;
  } else {
    fail<FormatError>("{}: nanochat.ffn_activation '{}' is not swiglu or relu2", f.name(), act);
  }
  c.sub_norms = f.get_bool("nanochat.sub_norms").value_or(false);
  c.tied_embeddings = f.get_bool("nanochat.tied_embeddings").value_or(false);
  c.mhc_streams = static_cast<int>(f.get_int("nanochat.mhc.n_streams").value_or(1));
  c.validate(f.name());
  return c;
}

void ModelConfig::write_gguf(gguf::GgufWriter& w) const {
  using gguf::Value;
  w.set("nanochat.context_length", Value(static_cast<std::uint32_t>(context_length)));
  w.set("nanochat.embedding_length", Value(static_cast<std::uint32_t>(dim)));
  w.set("nanochat.block_count", Value(static_cast<std::uint32_t>(n_layers)));
  w.set("nanochat.feed_forward_length", Value(static_cast<std::uint32_t>(ffn_dim)));
  w.set("nanochat.attention.head_count", Value(static_cast<std::uint32_t>(n_heads)));
  w.set("nanochat.attention.head_count_kv", Value(static_cast<std::uint32_t>(n_kv_heads)));
  w.set("nanochat.attention.layer_norm_rms_epsilon", Value(norm_eps));
  w.set("nanochat.rope.freq_base", Value(rope_theta));
  w.set("nanochat.vocab_size", Value(static_cast<std::uint32_t>(vocab_size)));
  w.set("nanochat.ffn_activation", Value(ffn_activation_name(ffn_activation)));
  w.set("nanochat.sub_norms", Value(sub_norms));
  w.set("nanochat.tied_embeddings", Value(tied_embeddings));
  w.set("nanochat.mhc.n_streams", Value(static_cast<std::uint32_t>(mhc_streams)));
}

}  // namespace nanochat::model
