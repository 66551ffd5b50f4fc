// Training configuration: a TOML file with [model], [training], [data] and [output] sections,
// plus `--set section.key=value` overrides. Every key is checked: an unknown key, a wrong type or
// a bad value is a UsageError naming the file and line (or the --set), the key and what is
// allowed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "nanochat/model/config.hpp"

namespace nanochat::train {

enum class Schedule { kWsd, kCosine };
enum class ScalarOptimizer { kLion, kAdamW };  // for what Muon does not take

struct TrainingSection {
  std::int64_t batch_size = 8;  // sequences per micro-batch
  std::int64_t seq_len = 256;   // tokens per sequence
  std::int64_t total_steps = 1000;
  std::int64_t warmup_steps = 50;
  Schedule schedule = Schedule::kWsd;
  double decay_fraction = 0.2;  // wsd: the last fraction of steps decays linearly to 0
  double min_lr_fraction = 0.0;
  double muon_lr = 0.02;  // 2-D hidden matrices
  ScalarOptimizer optimizer = ScalarOptimizer::kAdamW;
  double lion_lr = 3e-4;
  double adamw_lr = 3e-3;  // embeddings, norms, head, mHC parameters
  double weight_decay = 0.0;
  double entropy_weight = 0.0;  // loss = ce - entropy_weight * entropy (keeps outputs spread)
  double grad_clip = 1.0;       // global norm; 0 = off
  std::int64_t grad_accum = 1;
  // Float GEMMs of the backward pass and Muon: "auto" or "bf16" (bf16 where the CPU has
  // AVX512_BF16, fp32 elsewhere) or "fp32". The forward is int8 either way.
  std::string matmul_precision = "auto";
  std::int64_t checkpoint_interval = 100;
  std::int64_t keep_last = 3;
  std::int64_t eval_interval = 100;
  std::int64_t eval_batches = 4;
  std::uint64_t seed = 1;
};

struct DataSection {
  std::vector<std::string> inputs;        // files, folders, globs
  std::vector<std::string> include;       // extensions (".py") or globs applied to found files
  std::vector<std::string> exclude;       // globs (matched against the path) to leave out
  std::string tokenizer = "train";        // "train", or a GGUF file whose tokenizer to use
  std::int64_t tokenizer_vocab_size = 0;  // when training one; 0 = model.vocab_size
  double validation_fraction = 0.05;
  // When set, the validation tokens come from these files, folders or globs (held-out text the
  // tokenizer never sees) and validation_fraction is not used.
  std::vector<std::string> validation_inputs;
  std::int64_t max_bytes = 0;  // 0 = all (training text only)
  // "text": files of text; "chat": JSON-lines files of {"messages": [{"role", "content"}]},
  // rendered with chat_template, the loss on the assistant's tokens only.
  std::string format = "text";
  std::string chat_template = "plain";
};

struct OutputSection {
  std::filesystem::path checkpoint_dir = "checkpoints";
  std::string log_level = "info";
  std::string log_format = "text";  // text | json (stderr logs; the step log is always JSON lines)
};

struct TrainConfig {
  model::ModelConfig model;     // architecture "nanochat"; vocab_size may be set from the tokenizer
  std::int64_t group_size = 0;  // weights per absmean scale; 0 = the whole tensor
  // "ternary" (the model nanochat runs) or "none": float linear layers, the same network
  // otherwise, to measure the ternary gap; such a run is not exported.
  std::string quantization = "ternary";
  TrainingSection training;
  DataSection data;
  OutputSection output;
  std::filesystem::path source;  // the TOML file (relative data paths are relative to it)
};

// Reads `path` and applies `overrides` ("section.key=value", value in TOML syntax or a bare
// string). Throws UsageError.
TrainConfig load_train_config(const std::filesystem::path& path,
                              const std::vector<std::string>& overrides = {});

// The same from TOML text (tests); `name` is used in messages.
TrainConfig parse_train_config(std::string_view text, const std::string& name,
                               const std::vector<std::string>& overrides = {});

// The effective configuration as TOML (written next to checkpoints; a resumed run compares it).
std::string to_toml(const TrainConfig& config);

}  // namespace nanochat::train
