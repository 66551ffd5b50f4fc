// Hyperparameters of a nanochat model, read from (and written to) `nanochat.*` GGUF keys.
#pragma once

#include <cstdint>
#include <string>

namespace nanochat::gguf {
class GgufFile;
class GgufWriter;
}  // namespace nanochat::gguf

namespace nanochat::model {

enum class FfnActivation { kSwiGlu, kReluSquared };

struct ModelConfig {
  std::int64_t dim = 0;             // embedding_length
  std::int64_t n_layers = 0;        // block_count
  std::int64_t n_heads = 0;         // attention.head_count
  std::int64_t n_kv_heads = 0;      // attention.head_count_kv (grouped-query attention)
  std::int64_t ffn_dim = 0;         // feed_forward_length
  std::int64_t vocab_size = 0;      // rows of token_embd
  std::int64_t context_length = 0;  // the longest context the model was trained for
  float norm_eps = 1e-5f;           // attention.layer_norm_rms_epsilon
  float rope_theta = 10000.0f;      // rope.freq_base
  FfnActivation ffn_activation = FfnActivation::kSwiGlu;
  bool sub_norms = false;        // RMSNorm before attn_output and ffn_down (BitNet b1.58 2B4T)
  bool tied_embeddings = false;  // output = token_embd^T
  int mhc_streams = 1;           // mHC-lite residual streams: 1, 2 or 4

  std::int64_t head_dim() const { return dim / n_heads; }
  std::int64_t kv_dim() const { return head_dim() * n_kv_heads; }

  // Throws FormatError naming `source` and the key when a value is missing or inconsistent.
  void validate(const std::string& source) const;
  static ModelConfig from_gguf(const gguf::GgufFile& file);
  void write_gguf(gguf::GgufWriter& writer) const;
};

const char* ffn_activation_name(FfnActivation a);

}  // namespace nanochat::model
