// Hyperparameters of a model, read from (and written to) `<architecture>.*` GGUF keys.
//
// Architectures:
//   nanochat      nanochat's own: every option below, mHC-lite streams, `nanochat.*` flags.
//   bitnet        llama.cpp's BitNet b1.58 layout: sub-norms, NeoX RoPE, head tied to the
//                 embedding unless output.weight exists, FFN SiLU unless bitnet.hidden_act says
//                 relu2 (as llama.cpp reads it).
//   bitnet-b1.58  bitnet.cpp's name for the same layout with squared-ReLU FFN.
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

  std::int64_t head_dim() const { return dim / n_heads; }
  std::int64_t kv_dim() const { return head_dim() * n_kv_heads; }

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
