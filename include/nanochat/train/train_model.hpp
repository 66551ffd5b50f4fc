// The nanochat transformer for training: fp32 latent weights, a forward that quantizes exactly
// as inference does (absmean ternary weights with an fp16 scale, int8 per-token activations,
// int32 products on the kernel dispatch; a tied head through Q8_0 as inference quantizes it),
// and a backward written out per op in reverse graph order with straight-through quantizers.
//
// Thread-safety: one step at a time; ops use the KernelContext's pool.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/model/config.hpp"
#include "nanochat/train/ops.hpp"

namespace nanochat::train {

struct Param {
  std::string name;                 // GGUF tensor name (blk.0.attn_q.weight, ...)
  std::vector<std::int64_t> shape;  // row-major: (rows, cols) or (n)
  std::vector<float> value, grad;
  bool matrix = false;   // a 2-D hidden matrix: Muon updates it
  bool ternary = false;  // quantized to ternary in the forward
  bool decay = false;    // weight decay applies (matrices and embeddings, not gains)
  std::size_t size() const { return value.size(); }
};

class TrainModel {
 public:
  // config.architecture must be "nanochat"; vocab_size set.
  TrainModel(const model::ModelConfig& config, kernels::KernelContext& kernels);
  ~TrainModel();

  const model::ModelConfig& config() const { return config_; }
  // Parameters in graph order (embedding, blocks, output norm, head); the order is stable and
  // names are unique, so checkpoints and exports index by it.
  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  std::size_t parameter_count() const;

  // Precision of the backward's float GEMMs (the forward is int8 and exact either way).
  void set_gemm_precision(GemmPrecision p);
  // false: train without ternary quantization (float linear layers and head, float inputs) —
  // the same network as a float model, to measure what ternary weights cost. Such a model
  // cannot be exported: nanochat's inference runs ternary layers.
  void set_quantization(bool ternary);

  // Random initialization from `seed` (normal weights, unit gains, identity-like mHC).
  void init(std::uint64_t seed);

  // Forward and backward of one micro-batch: inputs and targets are (B, T). Gradients are added
  // to Param::grad scaled by `grad_scale` (1 / accumulation steps). Returns the loss statistics.
  LossStats train_step(std::span<const std::int32_t> inputs, std::span<const std::int32_t> targets,
                       std::int64_t batch, std::int64_t seq, double entropy_weight,
                       float grad_scale);

  // Forward only: loss statistics, and per-row cross-entropy in `row_ce` when given.
  LossStats evaluate(std::span<const std::int32_t> inputs, std::span<const std::int32_t> targets,
                     std::int64_t batch, std::int64_t seq, std::vector<double>* row_ce = nullptr);

  // Logits (T, V) of every position of one sequence, as the trainer's quantized forward
  // computes them (the reference the exported file must reproduce).
  std::vector<float> logits(std::span<const std::int32_t> tokens);

  void zero_grad();

  struct Impl;  // quantized weights and saved activations (train_model.cpp)

 private:
  model::ModelConfig config_;
  kernels::KernelContext& kernels_;
  std::vector<Param> params_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanochat::train
