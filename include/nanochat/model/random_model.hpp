// Random-weight models of every architecture nanochat runs (config.architecture), for tests and
// benchmarks: every tensor the architecture has, ternary layers in the chosen block format, a
// tokenizer supplied by the caller.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>

#include "nanochat/gguf/types.hpp"
#include "nanochat/model/config.hpp"

namespace nanochat::gguf {
class GgufWriter;
}

namespace nanochat::model {

struct RandomModelOptions {
  std::uint64_t seed = 1;
  gguf::TensorType ternary_type = gguf::TensorType::kTQ2_0;  // or kTQ1_0
  // Or kF16, kBF16, kQ8_0, or a block type with head kernels (kquant.hpp: kQ4_0 ... kQ6_K).
  gguf::TensorType embedding_type = gguf::TensorType::kF32;
  // nullopt: the ternary type; else a float type as for the embedding (kQ8_0, as BitNet files
  // have)
  std::optional<gguf::TensorType> output_type;
  // Ternary blocks with scale 1 and the layer's scale in a one-value `.scale` tensor, as
  // llama.cpp's bitnet layout allows.
  bool scale_tensors = false;
};

// Writes a model with `config` (vocab_size must match the tokenizer `add_tokenizer` writes).
void write_random_model(const ModelConfig& config, const RandomModelOptions& options,
                        const std::function<void(gguf::GgufWriter&)>& add_tokenizer,
                        const std::filesystem::path& path);

}  // namespace nanochat::model
