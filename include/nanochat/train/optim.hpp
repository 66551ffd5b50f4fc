// Optimizers and schedules. Muon (momentum, then Newton-Schulz orthogonalization, 5 steps) updates
// the 2-D hidden matrices; AdamW or Lion, as the config says, everything else (embeddings, head,
// gains, mHC parameters). Weight decay is decoupled and applies to Param::decay tensors only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/ops.hpp"
#include "nanochat/train/train_model.hpp"

namespace nanochat::train {

// Learning-rate multiplier at `step` (0-based): linear warmup, then wsd (flat, then a linear decay
// over the last decay_fraction of the steps) or cosine, ending at min_lr_fraction.
double lr_multiplier(const TrainingSection& t, std::int64_t step);

// Global L2 norm of all gradients; when max_norm > 0 and the norm exceeds it, gradients are
// scaled down to max_norm. Returns the norm before clipping.
double clip_gradients(std::vector<Param>& params, double max_norm);

// Newton-Schulz iteration (quintic, 5 steps) towards the nearest semi-orthogonal matrix of
// g (rows, cols); the result replaces g. Exposed for tests.
void newton_schulz5(ThreadPool& pool, std::vector<float>& g, std::int64_t rows, std::int64_t cols,
                    GemmPrecision precision = GemmPrecision::kF32);

class Optimizer {
 public:
  Optimizer(const TrainingSection& t, const std::vector<Param>& params);

  // One update of every parameter from its gradient, learning rates times `lr_scale`.
  void step(ThreadPool& pool, std::vector<Param>& params, double lr_scale);

  // Named state buffers (per parameter: momentum, second moment), for checkpoints.
  struct Slot {
    std::string name;
    std::vector<float>* data;
  };
  std::vector<Slot> slots();
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t s) { steps_ = s; }

 private:
  TrainingSection t_;
  GemmPrecision precision_;
  std::vector<std::vector<float>> m_, v_;  // per parameter (v_ empty unless AdamW)
  std::vector<std::string> names_;
  // One matrix's Muon update, its GEMMs on `pool`.
  void muon_update(ThreadPool& pool, Param& p, std::vector<float>& m, double lr_scale) const;

  std::vector<std::unique_ptr<ThreadPool>> serial_;  // one single-thread pool per worker
  std::int64_t steps_ = 0;
};

}  // namespace nanochat::train
