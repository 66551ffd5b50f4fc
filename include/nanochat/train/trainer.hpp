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
  bool table = false;           // a readable table on stdout (a terminal) instead of JSON lines
  bool progress = false;        // a progress bar with ETA on stderr
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

// Runs (or resumes) training. `log` receives human-readable progress lines (stderr). Throws
// UsageError for configuration and data problems and Error when the loss turns NaN/Inf (the
// last good checkpoint is kept).
TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         const std::function<void(const std::string&)>& log);

}  // namespace nanochat::train
