// Hyperparameters of a model, read from (and written to) `<architecture>.*` GGUF keys.
//
// Architectures:
//   nanochat      nanochat's own: every option below, mHC-lite streams, `nanochat.*` flags.
//   bitnet        llama.cpp's BitNet b1.58 layout: sub-norms, NeoX RoPE, head tied to the
//                 embedding unless output.weight exists, FFN SiLU unless bitnet.hidden_act says
//                 relu2 (as llama.cpp reads it).
//   bitnet-b1.58  bitnet.cpp's name for the same layout with squared-ReLU FFN.
//   bitnet-25     bitnet.cpp's BitNet b1.58 2B4T files (ggml-model-i2_s.gguf): as bitnet-b1.58;
//                 I2_S layers, F16 token_embd, F16 output.weight or a tied head.
//   llama         llama.cpp's llama with ternary layers (TriLM): SwiGLU, adjacent-pair RoPE,
//                 no sub-norms, head tied when output.weight is absent.
#pragma once

#include <cstdint>
#include <string>

namespace nanochat::gguf {
class GgufFile;
class GgufWriter;
}  // namespace nanochat::gguf

namespace nanochat::model {

enum class FfnActivation { kSwiGlu, kReluSquared };

// Which dimensions RoPE rotates together: (2i, 2i+1) as llama.cpp's "normal" RoPE, or
// (i, i + head_dim/2) as its "NeoX" RoPE (BitNet, Qwen, ...).
enum class RopeStyle { kAdjacent, kHalves };

struct ModelConfig {
  // Bounds every size is checked against before use, so that no product of them (a tensor, the
  // KV cache, a batch) can wrap: far above any published model, far below 2^63. A context of
  // 2^24 tokens is already 16 M positions (Llama 4 Scout claims 10 M).
  static constexpr std::int64_t kMaxContextLength = std::int64_t{1} << 24;
  static constexpr std::int64_t kMaxWidth = std::int64_t{1} << 20;  // dim, ffn_dim
  static constexpr std::int64_t kMaxLayers = std::int64_t{1} << 16;
  static constexpr std::int64_t kMaxVocab = std::int64_t{1} << 30;  // token ids are int32

  std::string architecture = "nanochat";  // general.architecture
  std::int64_t dim = 0;                   // embedding_length
  std::int64_t n_layers = 0;              // block_count
  std::int64_t n_heads = 0;               // attention.head_count
  std::int64_t n_kv_heads = 0;            // attention.head_count_kv (grouped-query attention)
  std::int64_t ffn_dim = 0;               // feed_forward_length
  std::int64_t vocab_size = 0;            // rows of token_embd
  std::int64_t context_length = 0;        // the longest context the model was trained for
  float norm_eps = 1e-5f;                 // attention.layer_norm_rms_epsilon
  float rope_theta = 10000.0f;            // rope.freq_base
  FfnActivation ffn_activation = FfnActivation::kSwiGlu;
  bool sub_norms = false;        // RMSNorm before attn_output and ffn_down (BitNet b1.58 2B4T)
  bool tied_embeddings = false;  // output = token_embd^T
  int mhc_streams = 1;           // mHC-lite residual streams: 1, 2 or 4
  RopeStyle rope_style = RopeStyle::kAdjacent;
  std::string source_file;  // the file the values came from (for messages); empty when built

  std::int64_t head_dim() const { return dim / n_heads; }
  std::int64_t kv_dim() const { return head_dim() * n_kv_heads; }
  // Bytes of a KV cache of `tokens` positions (keys and values of every layer, in float), in
  // double so that no flag or file value can wrap.
  double kv_cache_bytes(std::int64_t tokens) const;
  // The key context_length was read from ("llama.context_length").
  std::string context_key() const { return architecture + ".context_length"; }

  // Throws FormatError naming `source` and the key when a value is missing or inconsistent,
  // or when the architecture cannot express an option (mHC streams outside nanochat, ...).
  void validate(const std::string& source) const;
  // Throws FormatError for an architecture nanochat does not run, naming it.
  static ModelConfig from_gguf(const gguf::GgufFile& file);
  // Writes the hyperparameters under `architecture`'s prefix (llama.cpp's keys for bitnet and
  // llama, so llama.cpp loads the file); the caller sets general.architecture.
  void write_gguf(gguf::GgufWriter& writer) const;
};

const char* ffn_activation_name(FfnActivation a);

// The architectures Model::load accepts.
bool is_supported_architecture(const std::string& arch);
// Sets the flags an architecture fixes (rope style, sub-norms, activation default).
ModelConfig config_for_architecture(const std::string& arch);

}  // namespace nanochat::model
