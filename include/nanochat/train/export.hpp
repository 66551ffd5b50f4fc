// Export of a trained model to a self-describing GGUF inference file: hyperparameters, tokenizer
// and weights, ternary layers in TQ2_0 (or TQ1_0) with the trainer's fp16 absmean scale, so
// nanochat's inference reproduces the trainer's quantized forward.
//
// Architectures: "nanochat" (every option), or for one residual stream "llama" (no sub-norms,
// SwiGLU) and "bitnet" (sub-norms, SwiGLU, tied head — llama.cpp's layout, whose NeoX RoPE gets
// the Q/K rows permuted so the file computes the same function) or "bitnet-b1.58" (same, for
// squared-ReLU models, as bitnet.cpp runs them).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "nanochat/gguf/types.hpp"
#include "nanochat/model/config.hpp"
#include "nanochat/train/checkpoint.hpp"

namespace nanochat::train {

struct ExportOptions {
  std::string arch = "nanochat";
  gguf::TensorType ternary_type = gguf::TensorType::kTQ2_0;  // or kTQ1_0
  std::string name;                                          // general.name
};

// `tensors` holds the fp32 weights by GGUF name (as TrainModel names them). Throws UsageError
// when the architecture cannot express the model.
void export_gguf(const model::ModelConfig& config, const std::vector<CheckpointTensor>& tensors,
                 std::span<const std::uint8_t> tokenizer_gguf, const ExportOptions& options,
                 const std::filesystem::path& out);

// The model configuration a checkpoint was trained with.
model::ModelConfig checkpoint_model_config(const Checkpoint& c);
// Exports a checkpoint file, or the newest in a folder, to `out`; general.name is the run's
// folder. Returns the checkpoint's step. Throws UsageError for a folder without checkpoints, a
// float (quantization = "none") run, or an architecture that cannot express the model.
std::int64_t export_checkpoint(const std::filesystem::path& checkpoint,
                               const std::filesystem::path& out, const ExportOptions& options);

// A checkpoint's weights: its ".weight" tensors (optimizer state is "<name>.m" / "<name>.v").
std::vector<CheckpointTensor> checkpoint_weights(const Checkpoint& c);

}  // namespace nanochat::train
