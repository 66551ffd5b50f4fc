// The training loop: data -> micro-batches -> forward/backward -> clip -> optimizer -> schedule,
// with JSON-lines logging, validation, atomic checkpoints, exact resume and a final export.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/train/config.hpp"

namespace nanochat::train {

struct TrainRunOptions {
  TrainConfig config;
  bool resume = false;  // continue from the newest good checkpoint
  // A new run starts from this model (checkpoint, run folder or nanochat GGUF) instead of random
  // weights, with its tokenizer (train/init.hpp).
  std::filesystem::path init;
  std::int64_t stop_after = 0;  // > 0: checkpoint and stop after this many steps of this run
  // Set (e.g. by a SIGINT handler) to stop after the current step with a checkpoint.
  const std::atomic<bool>* interrupt = nullptr;
};

struct TrainResult {
  std::int64_t steps = 0;      // optimizer steps completed in total
  std::int64_t steps_run = 0;  // of which this run did (0: resumed a finished run)
  bool finished = false;       // reached total_steps (and exported)
  bool interrupted = false;    // stopped early by `interrupt`
  double last_loss = 0;
  double val_loss = 0, val_bpb = 0;  // last validation (0 when none ran)
  double tokens_per_second = 0;      // this run's mean
  double peak_memory_mib = 0;
  std::filesystem::path checkpoint, exported;
};

// One optimizer step, as the trainer reports it.
struct StepReport {
  std::int64_t step = 0;  // steps done, 1-based
  std::int64_t total_steps = 0;
  double loss = 0, ce = 0, entropy = 0;
  double lr = 0, lr_scalar = 0;  // Muon's and the scalar optimizer's learning rates
  double grad_norm = 0;
  double tokens_per_second = 0;  // this step's
  double elapsed_seconds = 0;    // of the whole run, earlier sessions included
  double eta_seconds = 0;        // at this run's mean pace
};

// What the trainer reports as it runs. The library draws nothing: the CLI draws a table, a
// progress bar or JSON lines from these calls, the Python module calls back. Every method is
// called on the training thread; the defaults do nothing.
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  // A human-readable line: data preparation, warnings, stopping, export.
  virtual void on_message(const std::string& line) { (void)line; }
  // Each record the run appends to <checkpoint_dir>/train.jsonl, as that JSON line.
  virtual void on_record(const std::string& json_line) { (void)json_line; }
  virtual void on_step(const StepReport& step) { (void)step; }
  virtual void on_validation(std::int64_t step, double loss, double bits_per_byte) {
    (void)step, (void)loss, (void)bits_per_byte;
  }
};

// Runs (or resumes) training, reporting to `observer`. Throws UsageError for configuration and
// data problems and Error when the loss turns NaN/Inf (the last good checkpoint is kept).
TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         TrainObserver& observer);
// The same with only the messages, to `log`.
TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         const std::function<void(const std::string&)>& log);

}  // namespace nanochat::train
