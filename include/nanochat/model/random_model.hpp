// Tiny random-weight nanochat models, for tests and benchmarks: every tensor the architecture
// has, ternary layers in the chosen block format, a tokenizer supplied by the caller.
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
  std::uint32_t embedding_type = 0;  // 0 F32, 1 F16
  std::uint32_t output_type = 0;     // 0: the ternary type; 8: Q8_0 (as BitNet b1.58 files have)
};

// Writes a model with `config` (vocab_size must match the tokenizer `add_tokenizer` writes).
void write_random_model(const ModelConfig& config, const RandomModelOptions& options,
                        const std::function<void(gguf::GgufWriter&)>& add_tokenizer,
                        const std::filesystem::path& path);

}  // namespace nanochat::model
