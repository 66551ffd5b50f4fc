// Random-weight models of every architecture nanochat runs (config.architecture), for tests and
// benchmarks: every tensor the architecture has, ternary layers in the chosen block format, a
// tokenizer supplied by the caller.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "nanochat/model/config.hpp"

namespace nanochat::gguf {
class GgufWriter;
}

namespace nanochat::model {

struct RandomModelOptions {
  std::uint64_t seed = 1;
  std::uint32_t ternary_type = 35;   // 35 TQ2_0, 34 TQ1_0
  std::uint32_t embedding_type = 0;  // 0 F32, 1 F16, 30 BF16, 8 Q8_0
  // -1: the ternary type; else a float type as for the embedding (8, Q8_0, as BitNet files have)
  std::int32_t output_type = -1;
  // Ternary blocks with scale 1 and the layer's scale in a one-value `.scale` tensor, as
  // llama.cpp's bitnet layout allows.
  bool scale_tensors = false;
};

// Writes a model with `config` (vocab_size must match the tokenizer `add_tokenizer` writes).
void write_random_model(const ModelConfig& config, const RandomModelOptions& options,
                        const std::function<void(gguf::GgufWriter&)>& add_tokenizer,
                        const std::filesystem::path& path);

}  // namespace nanochat::model
