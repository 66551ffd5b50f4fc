// Starting a run from an existing model (`nanochat train --init FILE`): a checkpoint (its fp32
// latent weights, exactly) or a nanochat GGUF file (ternary layers decoded to trit x scale, float
// tensors as stored). The run's [model] must describe the same network and its tokenizer is the
// init file's; optimizer state starts fresh.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "nanochat/model/config.hpp"
#include "nanochat/train/checkpoint.hpp"

namespace nanochat::train {

struct InitModel {
  std::filesystem::path source;
  model::ModelConfig config;
  std::vector<CheckpointTensor> weights;  // by GGUF tensor name
  std::vector<std::uint8_t> tokenizer_gguf;
};

// `path`: a .nckpt checkpoint, a folder of them (the newest readable), or a GGUF model of the
// nanochat architecture. Throws UsageError / FormatError naming --init and the file.
InitModel load_init_model(const std::filesystem::path& path);

}  // namespace nanochat::train
