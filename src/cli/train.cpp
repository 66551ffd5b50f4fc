// nanochat train: ternary quantization-aware training from a TOML config, and nanochat export:
// a checkpoint to a GGUF inference file.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/train/checkpoint.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/train/trainer.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::cli {
namespace {

// Ctrl-C during training: finish the step, checkpoint, stop (a second Ctrl-C kills at once).
std::atomic<bool> g_interrupt{false};

void on_sigint(int) {
  g_interrupt.store(true);
  ::signal(SIGINT, SIG_DFL);  // async-signal-safe; the next signal ends the process
  ::signal(SIGTERM, SIG_DFL);
}

std::string duration(double s) {
  const auto t = static_cast<std::int64_t>(s);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, t / 60 % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{:.1f}s", s);
}

// How `train` shows a run: on a terminal a table on stdout (about 50 rows) and a progress bar with
// ETA on stderr, else (or with --json) the JSON lines of train.jsonl on stdout; messages on stderr.
class TerminalObserver : public train::TrainObserver {
 public:
  TerminalObserver(bool table, bool bar) : table_(table), bar_(bar) {}

  void on_message(const std::string& line) override {
    clear_bar();
    fmt::print(stderr, "{}\n", line);
  }
  void on_record(const std::string& json_line) override {
    if (table_) return;
    fmt::print("{}\n", json_line);
    std::fflush(stdout);  // a reader on a pipe sees each step as it ends
  }
  void on_step(const train::StepReport& r) override {
    const std::int64_t every = std::max<std::int64_t>(1, r.total_steps / 50);
    if (table_ && (r.step % every == 0 || r.step == r.total_steps || r.step == 1 || !header_)) {
      clear_bar();
      if (!header_) {
        fmt::print("{:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}\n", "step", "loss", "ce",
                   "entropy", "lr", "grad_norm", "tok/s", "elapsed");
        header_ = true;
      }
      fmt::print("{:>8} {:>9.4f} {:>9.4f} {:>8.3f} {:>9.2e} {:>9.3f} {:>9.0f} {:>9}\n", r.step,
                 r.loss, r.ce, r.entropy, r.lr, r.grad_norm, r.tokens_per_second,
                 duration(r.elapsed_seconds));
      std::fflush(stdout);
    }
    if (bar_ && r.step < r.total_steps) {
      const int filled =
          static_cast<int>(30 * static_cast<double>(r.step) / static_cast<double>(r.total_steps));
      fmt::print(stderr, "\r[{}{}] {}/{} loss {:.4f} ETA {}   ",
                 std::string(static_cast<std::size_t>(filled), '#'),
                 std::string(static_cast<std::size_t>(30 - filled), '.'), r.step, r.total_steps,
                 r.loss, duration(r.eta_seconds));
      bar_shown_ = true;
    } else {
      clear_bar();
    }
  }
  void on_validation(std::int64_t step, double loss, double bpb) override {
    if (!table_) return;
    clear_bar();
    fmt::print("  validation at step {}: loss {:.4f}, {:.3f} bits per byte\n", step, loss, bpb);
  }
  void clear_bar() {
    if (!bar_shown_) return;
    fmt::print(stderr, "\r\033[K");
    bar_shown_ = false;
  }

 private:
  bool table_, bar_;
  bool header_ = false, bar_shown_ = false;
};

struct TrainOptions {
  std::string config;
  std::vector<std::string> set;
  bool resume = false;
  std::string init;
  std::int64_t stop_after = 0;
  bool json = false;
  KernelFlags kernel;
};

void run_train(const TrainOptions& o) {
  train::TrainRunOptions r;
  r.config = train::load_train_config(o.config, o.set);
  r.resume = o.resume;
  r.init = o.init;
  if (o.stop_after < 0) fail<UsageError>("--stop-after {}: must be 0 or more", o.stop_after);
  r.stop_after = o.stop_after;
  TerminalObserver observer(isatty(STDOUT_FILENO) != 0 && !o.json,
                            isatty(STDERR_FILENO) != 0 && !o.json);
  kernels::KernelContext ctx(o.kernel.options(o.kernel.single_thread_count()));
  auto log = [&observer](const std::string& line) { observer.on_message(line); };
  r.interrupt = &g_interrupt;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const train::TrainResult res = [&] {
    try {
      return train::run_training(r, ctx, observer);
    } catch (...) {
      observer.clear_bar();  // main's error line starts on a clean line
      throw;
    }
  }();
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  if (res.steps_run == 0 && res.finished) {
    if (!res.exported.empty()) log(fmt::format("model: {}", res.exported.string()));
    return;
  }
  log(fmt::format("{} after {} steps: loss {:.4f}{}; {:.0f} tokens/s; peak memory {:.0f} MiB",
                  res.finished ? "finished" : (res.interrupted ? "interrupted" : "stopped"),
                  res.steps, res.last_loss,
                  res.val_loss > 0 ? fmt::format(", validation {:.4f} ({:.3f} bits/byte)",
                                                 res.val_loss, res.val_bpb)
                                   : "",
                  res.tokens_per_second, res.peak_memory_mib));
  if (!res.checkpoint.empty()) log(fmt::format("checkpoint: {}", res.checkpoint.string()));
  if (!res.exported.empty()) log(fmt::format("model: {}", res.exported.string()));
  if (res.interrupted) throw Interrupted();
}

struct ExportCliOptions {
  std::string checkpoint;
  std::string output;
  std::string arch = "nanochat";
  std::string ternary = "tq2_0";
};

void run_export(const ExportCliOptions& o) {
  train::ExportOptions eo;
  eo.arch = o.arch;
  if (o.ternary != "tq2_0" && o.ternary != "tq1_0") {
    fail<UsageError>("--ternary {}: use tq2_0 or tq1_0", o.ternary);
  }
  eo.ternary_type = o.ternary == "tq2_0" ? gguf::TensorType::kTQ2_0 : gguf::TensorType::kTQ1_0;
  const std::int64_t step = train::export_checkpoint(o.checkpoint, o.output, eo);
  fmt::print(stderr, "wrote {} ({}, step {})\n", o.output, o.arch, step);
}

}  // namespace

void add_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a ternary model from a TOML config (see configs/): data preparation, "
      "quantization-aware training, checkpoints, export to <checkpoint_dir>/model.gguf");
  cmd->add_option("-c,--config", o->config, "Training config (TOML)")->required();
  cmd->add_option("--set", o->set,
                  "Override a config value: section.key=value (repeatable), e.g. "
                  "--set training.total_steps=200");
  cmd->add_flag("--resume", o->resume, "Continue from the newest good checkpoint");
  cmd->add_option("--init", o->init,
                  "Start from this model instead of random weights: a checkpoint, a run's "
                  "folder or a nanochat GGUF file (its tokenizer is used; fine-tuning)");
  cmd->add_option("--stop-after", o->stop_after,
                  "Checkpoint and stop after N steps of this run (continue with --resume)");
  cmd->add_flag("--json", o->json, "JSON lines on stdout even on a terminal");
  o->kernel.add_to(*cmd, false);
  cmd->callback([o] { run_train(*o); });

  auto e = std::make_shared<ExportCliOptions>();
  CLI::App* ex = app.add_subcommand(
      "export", "Write a training checkpoint as a GGUF model file nanochat (and llama.cpp) runs");
  ex->add_option("checkpoint", e->checkpoint, "A step-*.nckpt file or a checkpoint folder (newest)")
      ->required();
  ex->add_option("-o,--output", e->output, "Output GGUF file")->required();
  ex->add_option("--arch", e->arch,
                 "nanochat (any model), or for one residual stream llama (no sub-norms), bitnet "
                 "(sub-norms, SwiGLU, tied head) or bitnet-b1.58 (sub-norms, relu2, tied head)")
      ->capture_default_str();
  ex->add_option("--ternary", e->ternary, "Ternary block format: tq2_0 or tq1_0")
      ->capture_default_str();
  ex->callback([e] { run_export(*e); });
}

}  // namespace nanochat::cli
