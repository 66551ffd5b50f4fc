#include "nanochat/train/trainer.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <toml++/toml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <sstream>

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

using Log = std::function<void(const std::string&)>;

// Validation batches are drawn with the training seed xor this, so that they are not the
// training batches' order.
constexpr std::uint64_t kValidationSeedSalt = 0x5EEDull;

// Early warnings while training. The thresholds are rules of thumb, not tuned values:
//  - output entropy under 0.05 nats means nearly all probability sits on one token: the output
//    distribution is collapsing (training.entropy_weight counters it);
//  - a gradient norm 5x its running average is a spike worth a look before the loss diverges;
//    the average (weight 0.05 for the newest step, a memory of about 20 steps) is trusted only
//    after the run's first 20 steps;
//  - each warning at most once per 100 steps, so that a lasting condition does not flood the log.
class EarlyWarnings {
 public:
  static constexpr double kCollapsedEntropy = 0.05;  // nats
  static constexpr double kSpikeFactor = 5;
  static constexpr std::int64_t kSpikeWarmupSteps = 20;
  static constexpr double kEmaKeep = 0.95, kEmaNew = 0.05;
  static constexpr std::int64_t kRepeatAfterSteps = 100;

  explicit EarlyWarnings(std::int64_t first_step) : first_step_(first_step) {}

  // After step `step` (1-based) with its output entropy and gradient norm.
  void check(std::int64_t step, double entropy, double grad_norm, const Log& log) {
    if (entropy < kCollapsedEntropy && step - last_entropy_warning_ >= kRepeatAfterSteps) {
      log(
          fmt::format("warning: step {}: output entropy {:.4f} nats — the distribution is "
                      "collapsing; consider training.entropy_weight > 0",
                      step, entropy));
      last_entropy_warning_ = step;
    }
    if (step - first_step_ > kSpikeWarmupSteps && grad_norm > kSpikeFactor * grad_ema_ &&
        step - last_spike_warning_ >= kRepeatAfterSteps) {
      log(fmt::format("warning: step {}: gradient norm {:.3g} is {:.1f}x its recent average", step,
                      grad_norm, grad_norm / grad_ema_));
      last_spike_warning_ = step;
    }
    grad_ema_ = step - first_step_ == 1 ? grad_norm : kEmaKeep * grad_ema_ + kEmaNew * grad_norm;
  }

 private:
  std::int64_t first_step_;
  double grad_ema_ = 0;
  std::int64_t last_entropy_warning_ = -kRepeatAfterSteps;
  std::int64_t last_spike_warning_ = -kRepeatAfterSteps;
};

// The run's model file, <dir>/model.gguf: the one place a run exports.
fs::path export_run(const fs::path& dir, const model::ModelConfig& config,
                    const std::vector<CheckpointTensor>& weights,
                    std::span<const std::uint8_t> tokenizer_gguf) {
  fs::path out = dir / "model.gguf";
  ExportOptions eo;
  eo.name = dir.filename().string();
  export_gguf(config, weights, tokenizer_gguf, eo, out);
  return out;
}

// The newest readable checkpoint in `dir` when resuming; nullopt for a new run. Refuses a new
// run over existing checkpoints and a resume without one.
std::optional<Checkpoint> find_checkpoint(const fs::path& dir, bool resume, const Log& log) {
  const auto existing = list_checkpoints(dir);
  if (!resume && !existing.empty()) {
    fail<UsageError>(
        "{} already holds checkpoints ({}); pass --resume to continue that run, or set "
        "output.checkpoint_dir to a new folder",
        dir.string(), existing.front().filename().string());
  }
  if (!resume) return std::nullopt;
  if (existing.empty()) {
    fail<UsageError>("--resume: {} holds no checkpoint; start without --resume", dir.string());
  }
  for (const auto& p : existing) {
    try {
      return load_checkpoint(p);
    } catch (const FormatError& e) {
      log(fmt::format("warning: {}; trying an older checkpoint", e.what()));
    }
  }
  fail<UsageError>("--resume: no readable checkpoint in {}", dir.string());
}

// A resumed run that has nothing left to train: makes sure the model file exists and says how
// to go further.
TrainResult finished_already(const Checkpoint& ckpt, std::int64_t total_steps, const fs::path& dir,
                             const Log& log) {
  TrainResult done;
  done.steps = ckpt.step;
  done.finished = true;
  if (parse_train_config(ckpt.config_toml, "checkpoint").quantization == "ternary") {
    done.exported = dir / "model.gguf";
    if (!fs::exists(done.exported)) {
      export_run(dir, checkpoint_model_config(ckpt), checkpoint_weights(ckpt), ckpt.tokenizer_gguf);
    }
  }
  log(
      fmt::format("the run already finished at step {} (training.total_steps is {}); raise "
                  "training.total_steps to train further",
                  ckpt.step, total_steps));
  return done;
}

// --init: the weights and tokenizer of an existing model for a new run. The tokenizer is written
// to <dir>/init-tokenizer.gguf and becomes data.tokenizer unless the config names one.
InitModel load_init(const fs::path& path, const fs::path& dir, TrainConfig& cfg) {
  InitModel init = load_init_model(path);
  const fs::path tok = dir / "init-tokenizer.gguf";
  write_file_atomic(tok, std::string_view(reinterpret_cast<const char*>(init.tokenizer_gguf.data()),
                                          init.tokenizer_gguf.size()));
  if (cfg.data.tokenizer == "train") cfg.data.tokenizer = tok.string();
  // The same network? (The vocabulary is the init model's own tokenizer's: checked later.)
  TrainConfig from = cfg;
  from.model = init.config;
  if (cfg.model.vocab_size == 0) from.model.vocab_size = 0;
  std::string what;
  if (!same_model(from, cfg, what)) {
    const auto at = what.find(" in the checkpoint");
    if (at != std::string::npos) what.replace(at, 18, " in the --init model");
    fail<UsageError>("--init {}: {}; make [model] describe the same network", init.source.string(),
                     what);
  }
  return init;
}

// Sets model.vocab_size from the tokenizer, checking it against the config and the --init model.
void set_vocabulary(TrainConfig& cfg, const Dataset& data, const std::optional<InitModel>& init,
                    const Log& log) {
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
}

// "section.key" -> value, as text, of a config's TOML.
std::map<std::string, std::string> flatten_config(const std::string& toml_text) {
  std::map<std::string, std::string> out;
  const toml::table root = toml::parse(toml_text);
  for (const auto& [section, node] : root) {
    if (const auto* table = node.as_table()) {
      for (const auto& [key, value] : *table) {
        std::ostringstream text;
        if (const auto* number = value.as_floating_point()) {
          text << fmt::format("{}", number->get());  // shortest form: 0.05, not 0.0500...03
        } else {
          value.visit([&](const auto& v) { text << v; });
        }
        out[std::string(section.str()) + "." + std::string(key.str())] = text.str();
      }
    }
  }
  return out;
}

// The config keys whose values differ between the checkpoint's run and this one and can change
// what the run computes ("a = x -> y"). Output and bookkeeping keys cannot (where checkpoints and
// logs go, how many are kept, when validation runs), nor can where the data was read from when
// the data itself is the same.
std::string result_changing_differences(const std::string& saved, const std::string& now,
                                        bool same_data) {
  static constexpr std::string_view kInert[] = {
      "output.checkpoint_dir",        "output.log_level",   "output.log_format",
      "training.checkpoint_interval", "training.keep_last", "training.eval_interval",
      "training.eval_batches"};
  static constexpr std::string_view kDataSources[] = {
      "data.inputs",    "data.include",           "data.exclude",
      "data.max_bytes", "data.validation_inputs", "data.validation_fraction"};
  const auto a = flatten_config(saved), b = flatten_config(now);
  std::vector<std::string> keys;
  for (const auto& [k, v] : a) keys.push_back(k);
  for (const auto& [k, v] : b) {
    if (!a.contains(k)) keys.push_back(k);
  }
  std::string out;
  for (const auto& k : keys) {
    const auto x = a.find(k), y = b.find(k);
    const std::string before = x == a.end() ? "(unset)" : x->second;
    const std::string after = y == b.end() ? "(unset)" : y->second;
    if (before == after) continue;
    if (std::find(std::begin(kInert), std::end(kInert), k) != std::end(kInert)) continue;
    if (same_data &&
        std::find(std::begin(kDataSources), std::end(kDataSources), k) != std::end(kDataSources)) {
      continue;
    }
    out += fmt::format("{}{} = {} -> {}", out.empty() ? "" : ", ", k, before, after);
  }
  return out;
}

// Whether `cfg` and `data` can continue the checkpoint's run: the same network and quantization
// are required; other differences are warnings.
void check_resume(const Checkpoint& ckpt, const TrainConfig& cfg, const Dataset& data,
                  const Log& log) {
  const TrainConfig saved = parse_train_config(ckpt.config_toml, "checkpoint");
  std::string what;
  if (!same_model(saved, cfg, what)) {
    fail<UsageError>("--resume: {}; the checkpoint cannot continue with this config", what);
  }
  if (saved.quantization != cfg.quantization) {
    fail<UsageError>(
        "--resume: model.quantization is \"{}\" in the checkpoint but \"{}\" in the config",
        saved.quantization, cfg.quantization);
  }
  const bool same_data = ckpt.fingerprint == data.fingerprint();
  if (const std::string differences =
          result_changing_differences(to_toml(saved), to_toml(cfg), same_data);
      !differences.empty()) {
    log(
        fmt::format("warning: the config differs from the checkpoint's in {}; the run will not "
                    "match an uninterrupted one",
                    differences));
  }
  if (!same_data) log("warning: the training data changed since the checkpoint");
}

// The checkpoint's parameters and optimizer state into `model` and `optim`.
void restore(const Checkpoint& ckpt, TrainModel& model, Optimizer& optim) {
  for (auto& p : model.params()) {
    const CheckpointTensor* ct = ckpt.find(p.name);
    if (ct == nullptr || ct->data.size() != p.size()) {
      fail<FormatError>("checkpoint step {}: tensor '{}' is missing or has the wrong size",
                        ckpt.step, p.name);
    }
    p.value = ct->data;
  }
  for (auto& slot : optim.slots()) {
    const CheckpointTensor* ct = ckpt.find(slot.name);
    if (ct == nullptr || ct->data.size() != slot.data->size()) {
      fail<FormatError>(
          "checkpoint step {}: optimizer state '{}' is missing or has the wrong "
          "size (was the optimizer changed?)",
          ckpt.step, slot.name);
    }
    *slot.data = ct->data;
  }
  optim.set_steps(ckpt.step);
}

// The --init model's weights into `model`.
void copy_init_weights(const InitModel& init, TrainModel& model) {
  for (auto& p : model.params()) {
    const auto it = std::find_if(init.weights.begin(), init.weights.end(),
                                 [&](const CheckpointTensor& w) { return w.name == p.name; });
    if (it == init.weights.end() || it->data.size() != p.size()) {
      fail<FormatError>("--init {}: tensor '{}' is missing or has another size",
                        init.source.string(), p.name);
    }
    p.value = it->data;
  }
}

// One optimizer step's gradients, summed over training.grad_accum micro-batches; the loss
// figures are their means.
LossStats accumulate_gradients(TrainModel& model, const Batcher& batches, const TrainingSection& t,
                               std::int64_t step, std::vector<std::int32_t>& inputs,
                               std::vector<std::int32_t>& targets) {
  model.zero_grad();
  LossStats s;
  for (std::int64_t micro = 0; micro < t.grad_accum; ++micro) {
    batches.fill(step, micro, inputs, targets);
    const LossStats m = model.train_step(inputs, targets, t.batch_size, t.seq_len, t.entropy_weight,
                                         1.0f / static_cast<float>(t.grad_accum));
    s.loss += m.loss / static_cast<double>(t.grad_accum);
    s.ce += m.ce / static_cast<double>(t.grad_accum);
    s.entropy += m.entropy / static_cast<double>(t.grad_accum);
  }
  return s;
}

// Stops the run when step `step` (1-based) diverged: a NaN or Inf anywhere (weights,
// activations, gradients) shows in the loss or the gradient norm.
void fail_if_diverged(std::int64_t step, double loss, double grad_norm, const fs::path& dir) {
  if (std::isfinite(loss) && std::isfinite(grad_norm)) return;
  const auto kept = list_checkpoints(dir);
  fail(
      "step {}: the {} is {}; stopping. {} Lower the learning rates or tighten "
      "training.grad_clip, then --resume.",
      step, std::isfinite(loss) ? "gradient norm" : "loss", std::isfinite(loss) ? grad_norm : loss,
      kept.empty() ? std::string("No checkpoint was written yet.")
                   : fmt::format("The last good checkpoint, {}, is kept.",
                                 kept.front().filename().string()));
}

// A step's line in train.jsonl.
nlohmann::json step_record(const StepReport& r) {
  return {{"step", r.step},
          {"loss", r.loss},
          {"ce_loss", r.ce},
          {"entropy", r.entropy},
          {"lr", r.lr},
          {"lr_scalar", r.lr_scalar},
          {"grad_norm", r.grad_norm},
          {"tokens_per_sec", r.tokens_per_second},
          {"elapsed", r.elapsed_seconds}};
}

}  // namespace

TrainResult run_training(const TrainRunOptions& options, kernels::KernelContext& kernels,
                         TrainObserver& observer) {
  const Log log = [&observer](const std::string& line) { observer.on_message(line); };
  TrainConfig cfg = options.config;
  const TrainingSection& t = cfg.training;
  const fs::path dir = cfg.output.checkpoint_dir;
  make_directories(dir);
  // Checkpoints, logs and exports that a killed run was writing: the run folder is nanochat's,
  // so every dead writer's temporary goes, whatever its name (step-N.nckpt changes each time).
  if (const std::size_t n = remove_stale_temporaries(dir); n > 0) {
    log(fmt::format("removed {} temporary file{} a killed run left in {}", n, n > 1 ? "s" : "",
                    dir.string()));
  }

  // Checkpoints decide whether this is a new run.
  const std::optional<Checkpoint> ckpt = find_checkpoint(dir, options.resume, log);
  if (ckpt && ckpt->step >= t.total_steps) return finished_already(*ckpt, t.total_steps, dir, log);
  // A resumed run has the --init weights in its checkpoint, and its config names the tokenizer
  // file written then.
  std::optional<InitModel> init;
  if (!options.init.empty() && !ckpt) init = load_init(options.init, dir, cfg);
  if (ckpt && cfg.data.tokenizer == "train") {
    const TrainConfig saved = parse_train_config(ckpt->config_toml, "checkpoint");
    if (saved.data.tokenizer != "train") cfg.data.tokenizer = saved.data.tokenizer;
  }

  Dataset data = Dataset::prepare(cfg, log);
  set_vocabulary(cfg, data, init, log);
  if (ckpt) check_resume(*ckpt, cfg, data, log);

  TrainModel model(cfg.model, kernels);
  model.set_gemm_precision(parse_gemm_precision(t.matmul_precision));
  model.set_quantization(cfg.quantization == "ternary");
  Optimizer optim(t, model.params());
  std::int64_t step = 0;
  double elapsed_before = 0;
  if (ckpt) {
    restore(*ckpt, model, optim);
    step = ckpt->step;
    elapsed_before = ckpt->elapsed_s;
    log(fmt::format("resuming at step {} of {}", step, t.total_steps));
  } else {
    model.init(t.seed);
    if (init) copy_init_weights(*init, model);
  }
  log(
      fmt::format("model: {:.2f} M parameters, {} layers, dim {}, vocab {}, {} stream{}; "
                  "{} threads",
                  static_cast<double>(model.parameter_count()) / 1e6, cfg.model.n_layers,
                  cfg.model.dim, cfg.model.vocab_size, cfg.model.mhc_streams,
                  cfg.model.mhc_streams > 1 ? "s" : "", kernels.pool().size()));

  const fs::path log_path = dir / "train.jsonl";
  truncate_log(log_path, step);
  std::ofstream jsonl(log_path, std::ios::app);
  write_file_atomic(dir / "config.toml", to_toml(cfg));

  const Batcher train_batches(data.train_tokens(), t.batch_size, t.seq_len, t.seed);
  std::optional<Batcher> val_batches;
  if (!data.val_tokens().empty()) {
    val_batches.emplace(data.val_tokens(), t.batch_size, t.seq_len, t.seed ^ kValidationSeedSalt);
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
  EarlyWarnings warnings(first_step);
  std::vector<std::int32_t> inputs, targets;
  while (step < t.total_steps) {
    const auto step_start = Clock::now();
    const double lr_scale = lr_multiplier(t, step);
    const LossStats s = accumulate_gradients(model, train_batches, t, step, inputs, targets);
    const double grad_norm = clip_gradients(model.params(), t.grad_clip);
    fail_if_diverged(step + 1, s.loss, grad_norm, dir);
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
    emit(step_record(report));
    observer.on_step(report);
    warnings.check(step, s.entropy, grad_norm, log);

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
    if (cfg.quantization == "ternary") {
      std::vector<CheckpointTensor> weights;
      for (const auto& p : model.params()) weights.push_back({p.name, p.value});
      result.exported = export_run(dir, cfg.model, weights, data.tokenizer_gguf());
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
