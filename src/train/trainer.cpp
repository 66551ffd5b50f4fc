#include "nanochat/train/trainer.hpp"

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nanochat/train/checkpoint.hpp"
#include "nanochat/train/data.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/train/init.hpp"
#include "nanochat/train/optim.hpp"
#include "nanochat/train/train_model.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Keeps the lines of `path` whose "step" is at most `step` (a resumed run rewrites the rest).
void truncate_log(const fs::path& path, std::int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<std::int64_t>() <= step) kept += line + "\n";
    } catch (const std::exception&) {
      // a torn last line from a killed run
    }
  }
  write_file_atomic(path, kept);
}

bool same_model(const TrainConfig& a, const TrainConfig& b, std::string& what) {
  const auto& x = a.model;
  const auto& y = b.model;
  auto cmp = [&](auto u, auto v, const char* key) {
    if (u == v) return true;
    what = fmt::format("model.{} is {} in the checkpoint but {} in the config", key, u, v);
    return false;
  };
  return cmp(x.dim, y.dim, "dim") && cmp(x.n_layers, y.n_layers, "n_layers") &&
         cmp(x.n_heads, y.n_heads, "n_heads") && cmp(x.n_kv_heads, y.n_kv_heads, "n_kv_heads") &&
         cmp(x.ffn_dim, y.ffn_dim, "ffn_dim") && cmp(x.vocab_size, y.vocab_size, "vocab_size") &&
         cmp(x.mhc_streams, y.mhc_streams, "mhc_n_streams") &&
         cmp(x.sub_norms, y.sub_norms, "sub_norms") &&
         cmp(x.tied_embeddings, y.tied_embeddings, "tied_embeddings") &&
         cmp(model::ffn_activation_name(x.ffn_activation),
             model::ffn_activation_name(y.ffn_activation), "ffn_activation");
}

}  // namespace

TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         TrainObserver& observer) {
  const auto log = [&observer](const std::string& line) { observer.on_message(line); };
  TrainConfig cfg = options.config;
  const TrainingSection& t = cfg.training;
  const fs::path dir = cfg.output.checkpoint_dir;
  make_directories(dir);

  // Checkpoints decide whether this is a new run.
  const auto existing = list_checkpoints(dir);
  if (!options.resume && !existing.empty()) {
    fail<UsageError>(
        "{} already holds checkpoints ({}); pass --resume to continue that run, or set "
        "output.checkpoint_dir to a new folder",
        dir.string(), existing.front().filename().string());
  }
  std::optional<Checkpoint> ckpt;
  if (options.resume) {
    if (existing.empty()) {
      fail<UsageError>("--resume: {} holds no checkpoint; start without --resume", dir.string());
    }
    for (const auto& p : existing) {
      try {
        ckpt = load_checkpoint(p);
        break;
      } catch (const FormatError& e) {
        log(fmt::format("warning: {}; trying an older checkpoint", e.what()));
      }
    }
    if (!ckpt) fail<UsageError>("--resume: no readable checkpoint in {}", dir.string());
    if (ckpt->step >= t.total_steps) {
      // Nothing to train: make sure the model file exists and say how to go further.
      TrainResult done;
      done.steps = ckpt->step;
      done.finished = true;
      const bool ternary =
          parse_train_config(ckpt->config_toml, "checkpoint").quantization == "ternary";
      if (ternary) done.exported = dir / "model.gguf";
      if (ternary && !fs::exists(done.exported)) {
        std::vector<CheckpointTensor> weights;
        for (const auto& w : ckpt->tensors) {
          if (w.name.ends_with(".weight")) weights.push_back(w);
        }
        ExportOptions eo;
        eo.name = dir.filename().string();
        export_gguf(checkpoint_model_config(*ckpt), weights, ckpt->tokenizer_gguf, eo,
                    done.exported);
      }
      log(
          fmt::format("the run already finished at step {} (training.total_steps is {}); raise "
                      "training.total_steps to train further",
                      ckpt->step, t.total_steps));
      return done;
    }
  }

  // --init: the weights and tokenizer of an existing model (a new run only; a resumed run has
  // them in its checkpoint, and its config names the tokenizer file written here).
  std::optional<InitModel> init;
  if (!options.init.empty() && !ckpt) {
    init = load_init_model(options.init);
    const fs::path tok = dir / "init-tokenizer.gguf";
    write_file_atomic(tok,
                      std::string_view(reinterpret_cast<const char*>(init->tokenizer_gguf.data()),
                                       init->tokenizer_gguf.size()));
    if (cfg.data.tokenizer == "train") cfg.data.tokenizer = tok.string();
    // The same network? (The vocabulary is the init model's own tokenizer's: checked below.)
    TrainConfig from = cfg;
    from.model = init->config;
    if (cfg.model.vocab_size == 0) from.model.vocab_size = 0;
    std::string what;
    if (!same_model(from, cfg, what)) {
      const auto at = what.find(" in the checkpoint");
      if (at != std::string::npos) what.replace(at, 18, " in the --init model");
      fail<UsageError>("--init {}: {}; make [model] describe the same network",
                       init->source.string(), what);
    }
  }
  if (ckpt && cfg.data.tokenizer == "train") {
    const TrainConfig saved = parse_train_config(ckpt->config_toml, "checkpoint");
    if (saved.data.tokenizer != "train") cfg.data.tokenizer = saved.data.tokenizer;
  }

  Dataset data = Dataset::prepare(cfg, log);
  const auto vocab = static_cast<std::int64_t>(data.tokenizer().size());
  if (cfg.model.vocab_size != 0 && cfg.model.vocab_size != vocab) {
    fail<UsageError>(
        "{}: model.vocab_size is {} but the tokenizer has {} tokens; set it to {} "
        "or 0",
        cfg.source.string(), cfg.model.vocab_size, vocab, vocab);
  }
  cfg.model.vocab_size = vocab;
  if (init) {
    if (init->config.vocab_size != vocab) {
      fail<UsageError>(
          "--init {}: the model has {} tokens but the tokenizer of data.tokenizer {} has {}; "
          "fine-tune with the model's own tokenizer (leave data.tokenizer unset)",
          init->source.string(), init->config.vocab_size, cfg.data.tokenizer, vocab);
    }
    log(fmt::format("init: weights and tokenizer from {}", init->source.string()));
  }
  if (ckpt) {
    const TrainConfig saved = parse_train_config(ckpt->config_toml, "checkpoint");
    std::string what;
    if (!same_model(saved, cfg, what)) {
      fail<UsageError>("--resume: {}; the checkpoint cannot continue with this config", what);
    }
    if (saved.quantization != cfg.quantization) {
      fail<UsageError>(
          "--resume: model.quantization is \"{}\" in the checkpoint but \"{}\" in the config",
          saved.quantization, cfg.quantization);
    }
    if (to_toml(saved) != to_toml(cfg)) {
      log("warning: the config differs from the checkpoint's (not in [model]); the run will not "
          "match an uninterrupted one");
    }
    if (ckpt->fingerprint != data.fingerprint()) {
      log("warning: the training data changed since the checkpoint");
    }
  }

  TrainModel model(cfg.model, kernels);
  model.set_gemm_precision(parse_gemm_precision(t.matmul_precision));
  model.set_quantization(cfg.quantization == "ternary");
  Optimizer optim(t, model.params());
  std::int64_t step = 0;
  double elapsed_before = 0;
  if (ckpt) {
    for (auto& p : model.params()) {
      const CheckpointTensor* ct = ckpt->find(p.name);
      if (ct == nullptr || ct->data.size() != p.size()) {
        fail<FormatError>("checkpoint step {}: tensor '{}' is missing or has the wrong size",
                          ckpt->step, p.name);
      }
      p.value = ct->data;
    }
    for (auto& slot : optim.slots()) {
      const CheckpointTensor* ct = ckpt->find(slot.name);
      if (ct == nullptr || ct->data.size() != slot.data->size()) {
        fail<FormatError>(
            "checkpoint step {}: optimizer state '{}' is missing or has the wrong "
            "size (was the optimizer changed?)",
            ckpt->step, slot.name);
      }
      *slot.data = ct->data;
    }
    step = ckpt->step;
    optim.set_steps(step);
    elapsed_before = ckpt->elapsed_s;
    log(fmt::format("resuming at step {} of {}", step, t.total_steps));
  } else {
    model.init(t.seed);
    if (init) {
      for (auto& p : model.params()) {
        const auto it = std::find_if(init->weights.begin(), init->weights.end(),
                                     [&](const CheckpointTensor& w) { return w.name == p.name; });
        if (it == init->weights.end() || it->data.size() != p.size()) {
          fail<FormatError>("--init {}: tensor '{}' is missing or has another size",
                            init->source.string(), p.name);
        }
        p.value = it->data;
      }
    }
  }
  log(fmt::format(
      "model: {:.2f} M parameters, {} layers, dim {}, vocab {}, {} stream{}; "
      "{} threads",
      static_cast<double>(model.parameter_count()) / 1e6, cfg.model.n_layers, cfg.model.dim, vocab,
      cfg.model.mhc_streams, cfg.model.mhc_streams > 1 ? "s" : "", kernels.pool().size()));

  const fs::path log_path = dir / "train.jsonl";
  truncate_log(log_path, step);
  std::ofstream jsonl(log_path, std::ios::app);
  write_file_atomic(dir / "config.toml", to_toml(cfg));

  const Batcher train_batches(data.train_tokens(), t.batch_size, t.seq_len, t.seed);
  std::optional<Batcher> val_batches;
  if (!data.val_tokens().empty()) {
    val_batches.emplace(data.val_tokens(), t.batch_size, t.seq_len, t.seed ^ 0x5EEDull);
  }
  auto save = [&](std::int64_t at, double elapsed) {
    Checkpoint c;
    c.step = at;
    c.elapsed_s = elapsed;
    c.config_toml = to_toml(cfg);
    c.fingerprint = data.fingerprint();
    for (const auto& p : model.params()) c.tensors.push_back({p.name, p.value});
    for (auto& slot : optim.slots()) c.tensors.push_back({slot.name, *slot.data});
    c.tokenizer_gguf = data.tokenizer_gguf();
    return save_checkpoint(dir, c, t.keep_last);
  };

  TrainResult result;
  auto emit = [&](const nlohmann::json& line) {
    const std::string text = line.dump();
    jsonl << text << "\n";
    jsonl.flush();
    observer.on_record(text);
  };
  auto evaluate = [&](std::int64_t at) {
    if (!val_batches) return;
    double ce = 0, bytes = 0, tokens = 0;
    std::vector<std::int32_t> in, tg;
    std::vector<double> row_ce;
    for (std::int64_t b = 0; b < t.eval_batches; ++b) {
      val_batches->fill(b, 0, in, tg);
      model.evaluate(in, tg, t.batch_size, t.seq_len, &row_ce);
      for (std::size_t i = 0; i < tg.size(); ++i) {
        if (tg[i] < 0) continue;  // context only (chat data)
        ce += row_ce[i];
        bytes += data.token_bytes()[static_cast<std::size_t>(tg[i])];
        tokens += 1;
      }
    }
    result.val_loss = ce / std::max(1.0, tokens);
    result.val_bpb = ce / std::log(2.0) / std::max(1.0, bytes);
    emit({{"step", at}, {"val_loss", result.val_loss}, {"val_bpb", result.val_bpb}});
    observer.on_validation(at, result.val_loss, result.val_bpb);
  };

  const std::int64_t tokens_per_step = t.batch_size * t.seq_len * t.grad_accum;
  const auto run_start = Clock::now();
  const std::int64_t first_step = step;
  double grad_ema = 0;
  std::int64_t last_entropy_warning = -1000000, last_spike_warning = -1000000;
  std::vector<std::int32_t> inputs, targets;
  while (step < t.total_steps) {
    const auto step_start = Clock::now();
    const double lr_scale = lr_multiplier(t, step);
    model.zero_grad();
    LossStats s;
    for (std::int64_t micro = 0; micro < t.grad_accum; ++micro) {
      train_batches.fill(step, micro, inputs, targets);
      const LossStats m =
          model.train_step(inputs, targets, t.batch_size, t.seq_len, t.entropy_weight,
                           1.0f / static_cast<float>(t.grad_accum));
      s.loss += m.loss / static_cast<double>(t.grad_accum);
      s.ce += m.ce / static_cast<double>(t.grad_accum);
      s.entropy += m.entropy / static_cast<double>(t.grad_accum);
    }
    // A NaN or Inf anywhere (weights, activations, gradients) shows in the loss or the norm.
    const double grad_norm = clip_gradients(model.params(), t.grad_clip);
    if (!std::isfinite(s.loss) || !std::isfinite(grad_norm)) {
      const auto kept = list_checkpoints(dir);
      fail(
          "step {}: the {} is {}; stopping. {} Lower the learning rates or tighten "
          "training.grad_clip, then --resume.",
          step + 1, std::isfinite(s.loss) ? "gradient norm" : "loss",
          std::isfinite(s.loss) ? grad_norm : s.loss,
          kept.empty() ? std::string("No checkpoint was written yet.")
                       : fmt::format("The last good checkpoint, {}, is kept.",
                                     kept.front().filename().string()));
    }
    optim.step(kernels.pool(), model.params(), lr_scale);
    ++step;
    const double step_s = std::chrono::duration<double>(Clock::now() - step_start).count();
    const double run_s = std::chrono::duration<double>(Clock::now() - run_start).count();
    const double tok_s = static_cast<double>(tokens_per_step) / step_s;
    result.last_loss = s.loss;
    StepReport report;
    report.step = step;
    report.total_steps = t.total_steps;
    report.loss = s.loss;
    report.ce = s.ce;
    report.entropy = s.entropy;
    report.lr = t.muon_lr * lr_scale;
    report.lr_scalar = (t.optimizer == ScalarOptimizer::kAdamW ? t.adamw_lr : t.lion_lr) * lr_scale;
    report.grad_norm = grad_norm;
    report.tokens_per_second = tok_s;
    report.elapsed_seconds = elapsed_before + run_s;
    report.eta_seconds =
        run_s / static_cast<double>(step - first_step) * static_cast<double>(t.total_steps - step);
    emit({{"step", step},
          {"loss", s.loss},
          {"ce_loss", s.ce},
          {"entropy", s.entropy},
          {"lr", report.lr},
          {"lr_scalar", report.lr_scalar},
          {"grad_norm", grad_norm},
          {"tokens_per_sec", tok_s},
          {"elapsed", report.elapsed_seconds}});
    observer.on_step(report);
    // Early warnings.
    if (s.entropy < 0.05 && step - last_entropy_warning >= 100) {
      log(
          fmt::format("warning: step {}: output entropy {:.4f} nats — the distribution is "
                      "collapsing; consider training.entropy_weight > 0",
                      step, s.entropy));
      last_entropy_warning = step;
    }
    if (step - first_step > 20 && grad_norm > 5 * grad_ema && step - last_spike_warning >= 100) {
      log(fmt::format("warning: step {}: gradient norm {:.3g} is {:.1f}x its recent average", step,
                      grad_norm, grad_norm / grad_ema));
      last_spike_warning = step;
    }
    grad_ema = step - first_step == 1 ? grad_norm : 0.95 * grad_ema + 0.05 * grad_norm;

    const bool last = step == t.total_steps;
    const bool interrupted = options.interrupt != nullptr && options.interrupt->load();
    const bool stop =
        (options.stop_after > 0 && step - first_step >= options.stop_after) || interrupted;
    if ((t.eval_interval > 0 && step % t.eval_interval == 0) || last) evaluate(step);
    if ((t.checkpoint_interval > 0 && step % t.checkpoint_interval == 0) || last || stop) {
      result.checkpoint = save(step, elapsed_before + run_s);
    }
    if (stop && !last) {
      log(fmt::format("stopping at step {} ({}) with a checkpoint; continue with --resume", step,
                      interrupted ? "interrupted" : "--stop-after"));
      result.interrupted = interrupted;
      break;
    }
  }
  const double run_s = std::chrono::duration<double>(Clock::now() - run_start).count();
  result.steps = step;
  result.steps_run = step - first_step;
  result.tokens_per_second =
      step > first_step
          ? static_cast<double>((step - first_step) * tokens_per_step) / std::max(run_s, 1e-9)
          : 0;
  if (step >= t.total_steps) {
    result.finished = true;
    std::vector<CheckpointTensor> weights;
    for (const auto& p : model.params()) weights.push_back({p.name, p.value});
    if (cfg.quantization == "ternary") {
      result.exported = dir / "model.gguf";
      ExportOptions eo;
      eo.name = dir.filename().string();
      export_gguf(cfg.model, weights, data.tokenizer_gguf(), eo, result.exported);
    } else {
      log("model.quantization = \"none\": a float comparison run, not exported (nanochat runs "
          "ternary models)");
    }
  }
  result.peak_memory_mib = peak_rss_mib();
  emit({{"step", step},
        {"done", result.finished},
        {"tokens_per_sec_mean", result.tokens_per_second},
        {"peak_memory_mib", result.peak_memory_mib}});
  return result;
}

TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         const std::function<void(const std::string&)>& log) {
  struct LogObserver : TrainObserver {
    const std::function<void(const std::string&)>& log;
    explicit LogObserver(const std::function<void(const std::string&)>& l) : log(l) {}
    void on_message(const std::string& line) override {
      if (log) log(line);
    }
  } observer(log);
  return run_training(options, kernels, observer);
}

}  // namespace nanochat::train
