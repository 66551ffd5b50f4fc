// The trainer end to end: config validation, schedules, Muon's orthogonalization, export parity
// (the exported file's inference logits against the trainer's quantized forward, for every
// architecture), overfitting a tiny text, exact resume, and damaged checkpoints.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/kernels/isa.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/train/checkpoint.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/train/optim.hpp"
#include "nanochat/train/train_model.hpp"
#include "nanochat/train/trainer.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "test_helpers.hpp"

namespace nanochat::train {
namespace {

namespace fs = std::filesystem;

using nanochat::test_support::quiet_kernels;
using nanochat::test_support::temp_dir;

constexpr const char* kMinimal = R"(
[model]
dim = 256
n_layers = 1
n_heads = 2
ffn_dim = 256
max_seq_len = 32
[data]
inputs = ["x"]
)";

std::string error_of(const std::string& text, const std::vector<std::string>& set = {}) {
  try {
    (void)parse_train_config(text, "t.toml", set);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfig, ParsesDefaultsAndOverrides) {
  const TrainConfig c = parse_train_config(kMinimal, "t.toml",
                                           {"training.total_steps=7", "training.schedule=cosine"});
  EXPECT_EQ(c.model.dim, 256);
  EXPECT_EQ(c.model.n_kv_heads, 2);  // defaults to n_heads
  EXPECT_EQ(c.training.total_steps, 7);
  EXPECT_EQ(c.training.seq_len, 32);  // defaults to the context when shorter
  EXPECT_EQ(c.training.schedule, Schedule::kCosine);
  // The effective config round-trips through TOML.
  const TrainConfig again = parse_train_config(to_toml(c), "again.toml");
  EXPECT_EQ(to_toml(again), to_toml(c));
}

TEST(TrainConfig, RejectsWithFileLineKeyAndWhatIsAllowed) {
  const std::string base = kMinimal;
  EXPECT_NE(error_of(base + "[training]\nlr = 3\n").find("t.toml:11: unknown key 'training.lr'"),
            std::string::npos)
      << error_of(base + "[training]\nlr = 3\n");
  EXPECT_NE(error_of(base + "[training]\nlr = 3\n").find("batch_size"), std::string::npos);
  EXPECT_NE(error_of(base + "[training]\nbatch_size = \"8\"\n")
                .find("t.toml:11: training.batch_size must be 1 or more"),
            std::string::npos);
  EXPECT_NE(error_of(base + "[training]\nschedule = \"linear\"\n")
                .find("training.schedule must be \"wsd\" or \"cosine\""),
            std::string::npos);
  EXPECT_NE(error_of(base + "[optimizer]\nx = 1\n").find("unknown section [optimizer]"),
            std::string::npos);
  EXPECT_NE(error_of(base, {"training.seq_len=64"})
                .find("training.seq_len 64 exceeds model.max_seq_len 32"),
            std::string::npos);
  EXPECT_NE(error_of(base, {"model.mhc_n_streams=3"}).find("--set model.mhc_n_streams=3"),
            std::string::npos);
  EXPECT_NE(error_of(base, {"nonsense"}).find("expected section.key=value"), std::string::npos);
  EXPECT_NE(error_of(base + "[model\n").find("t.toml:"), std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal).replace(std::string(kMinimal).find("dim = 256"), 9,
                                                   "dim = 300"))
                .find("model.dim"),
            std::string::npos);
}

TEST(Schedules, WarmupStableDecayAndCosine) {
  TrainingSection t;
  t.total_steps = 100;
  t.warmup_steps = 10;
  t.decay_fraction = 0.2;
  t.min_lr_fraction = 0.1;
  EXPECT_NEAR(lr_multiplier(t, 0), 0.1, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 9), 1.0, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 50), 1.0, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 80), 1.0, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 90), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 99), 0.1 + 0.9 * 0.05, 1e-12);
  t.schedule = Schedule::kCosine;
  EXPECT_NEAR(lr_multiplier(t, 10), 1.0, 1e-12);
  EXPECT_NEAR(lr_multiplier(t, 55), 0.1 + 0.9 * 0.5, 1e-9);
  EXPECT_NEAR(lr_multiplier(t, 100), 0.1, 1e-12);
}

TEST(Muon, NewtonSchulzOrthogonalizes) {
  kernels::ThreadPool pool(2);
  // 72 rows or columns and more take the blocked symmetric Gram products.
  for (auto [rows, cols] :
       {std::pair<std::int64_t, std::int64_t>{32, 96}, {96, 32}, {72, 160}, {160, 72}}) {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> g(static_cast<std::size_t>(rows * cols));
    for (auto& x : g) x = d(rng);
    newton_schulz5(pool, g, rows, cols);
    // The small Gram matrix is close to the identity (NS5 leaves singular values in ~[0.7, 1.2]).
    const std::int64_t r = std::min(rows, cols);
    for (std::int64_t i = 0; i < r; ++i) {
      for (std::int64_t j = 0; j < r; ++j) {
        double dot = 0;
        for (std::int64_t k = 0; k < std::max(rows, cols); ++k) {
          const float a = rows < cols ? g[static_cast<std::size_t>(i * cols + k)]
                                      : g[static_cast<std::size_t>(k * cols + i)];
          const float b = rows < cols ? g[static_cast<std::size_t>(j * cols + k)]
                                      : g[static_cast<std::size_t>(k * cols + j)];
          dot += static_cast<double>(a) * b;
        }
        if (i == j) {
          EXPECT_GT(dot, 0.45) << rows << "x" << cols;
          EXPECT_LT(dot, 1.5) << rows << "x" << cols;
        } else {
          EXPECT_LT(std::fabs(dot), 0.35) << rows << "x" << cols;
        }
      }
    }
  }
}

// A tall matrix is orthogonalized through X^T X, a wide one through X X^T: the same iteration,
// so the tall result is the transpose of the wide result on the transposed input.
TEST(Muon, NewtonSchulzTallEqualsTransposedWide) {
  kernels::ThreadPool pool(2);
  const std::int64_t rows = 160, cols = 72;  // blocked symmetric Gram products
  std::mt19937_64 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> tall(static_cast<std::size_t>(rows * cols)), wide(tall.size());
  for (auto& x : tall) x = d(rng);
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      wide[static_cast<std::size_t>(j * rows + i)] = tall[static_cast<std::size_t>(i * cols + j)];
    }
  }
  newton_schulz5(pool, tall, rows, cols);
  newton_schulz5(pool, wide, cols, rows);
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      ASSERT_NEAR(tall[static_cast<std::size_t>(i * cols + j)],
                  wide[static_cast<std::size_t>(j * rows + i)], 2e-5f)
          << i << "," << j;
    }
  }
}

// With two or more matrices per thread, Muon gives each thread whole matrices (each orthogonalized
// on a pool of its own) instead of splitting every small GEMM. Every matrix must come out as the
// one-thread optimizer leaves it, bit for bit, in fp32 and in bf16: the scheduling may not mix
// up matrices, momentum buffers or scratch.
TEST(Muon, WholeMatricesPerThreadGiveTheOneThreadUpdate) {
  for (const char* precision : {"fp32", "bf16"}) {
    TrainingSection t;
    t.matmul_precision = precision;
    t.weight_decay = 0.1;
    std::mt19937_64 rng(9);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<Param> params;
    const std::pair<std::int64_t, std::int64_t> shapes[] = {
        {96, 96}, {160, 72}, {72, 160}, {32, 96}, {96, 32}, {64, 64}, {128, 96}};
    for (const auto& [rows, cols] : shapes) {
      Param p;
      p.name = fmt::format("m{}x{}", rows, cols);
      p.shape = {rows, cols};
      p.value.resize(static_cast<std::size_t>(rows * cols));
      p.grad.resize(p.value.size());
      for (auto& x : p.value) x = d(rng);
      p.matrix = p.decay = true;
      params.push_back(std::move(p));
    }
    Param gain;  // AdamW's, beside them
    gain.name = "gain";
    gain.shape = {40};
    gain.value.assign(40, 1.0f);
    gain.grad.resize(40);
    params.push_back(std::move(gain));
    std::vector<Param> one = params, many = params;
    kernels::ThreadPool pool1(1), pool3(3);
    Optimizer opt1(t, one), opt3(t, many);
    for (int step = 0; step < 2; ++step) {
      for (std::size_t i = 0; i < params.size(); ++i) {
        for (std::size_t j = 0; j < params[i].grad.size(); ++j) {
          one[i].grad[j] = many[i].grad[j] = d(rng);
        }
      }
      opt1.step(pool1, one, 1.0);
      opt3.step(pool3, many, 1.0);
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      EXPECT_NE(one[i].value, params[i].value) << precision << " " << params[i].name;
      for (std::size_t j = 0; j < params[i].value.size(); ++j) {
        ASSERT_EQ(many[i].value[j], one[i].value[j])
            << precision << " " << params[i].name << " " << j;
      }
    }
  }
}

std::vector<std::uint8_t> tiny_tokenizer(const std::string& text, std::size_t vocab) {
  model::BpeTrainOptions o;
  o.vocab_size = vocab;
  model::BpeTrainer t(o);
  t.add_text(text);
  gguf::GgufWriter w;
  model::write_tokenizer_metadata(w, t.train(), false);
  return w.bytes();
}

std::string sample_text() {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += fmt::format("def f{}(x):\n    return x * {} + {}\n\n", i % 7, i, i * 3 % 11);
  }
  return text;
}

model::ModelConfig small_config(int streams, bool tied, bool sub_norms, model::FfnActivation act) {
  model::ModelConfig c;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 512;
  c.vocab_size = 300;
  c.context_length = 32;
  c.mhc_streams = streams;
  c.tied_embeddings = tied;
  c.sub_norms = sub_norms;
  c.ffn_activation = act;
  return c;
}

struct ParityCase {
  const char* name;
  int streams;
  bool tied, sub_norms;
  model::FfnActivation act;
  const char* arch;
  gguf::TensorType ternary_type;
};

void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.name; }

class ExportParity : public ::testing::TestWithParam<ParityCase> {};

// The trainer's forward runs its ternary layers through oneDNN's int8 matmul where the CPU has
// AVX512_VNNI and the packed kernels elsewhere (or with another path forced): both are checked,
// the packed kernels through their AVX2 path where the CPU has it.
void check_parity(const ParityCase& pc, const kernels::KernelOptions& options) {
  const auto tok = tiny_tokenizer(sample_text(), 300);
  kernels::KernelContext ctx(options);
  TrainModel m(small_config(pc.streams, pc.tied, pc.sub_norms, pc.act), ctx);
  m.init(5);
  // A few optimizer steps so the weights are not at their initial symmetric state.
  TrainingSection t;
  Optimizer opt(t, m.params());
  std::vector<std::int32_t> in(2 * 16), tg(2 * 16);
  for (std::size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<std::int32_t>((i * 37) % 300);
    tg[i] = static_cast<std::int32_t>((i * 53 + 1) % 300);
  }
  for (int s = 0; s < 3; ++s) {
    m.zero_grad();
    m.train_step(in, tg, 2, 16, 0.0, 1.0f);
    opt.step(ctx.pool(), m.params(), 1.0);
  }
  std::vector<CheckpointTensor> weights;
  for (const auto& p : m.params()) weights.push_back({p.name, p.value});
  const fs::path dir =
      temp_dir(std::string("parity-") + pc.name + "-" + kernels::isa_name(ctx.isa()));
  ExportOptions eo;
  eo.arch = pc.arch;
  eo.ternary_type = pc.ternary_type;
  export_gguf(m.config(), weights, tok, eo, dir / "model.gguf");

  const std::vector<std::int32_t> tokens = {1, 50, 7, 299, 120, 3, 3, 42, 17, 200, 88, 5};
  const std::vector<float> want = m.logits(tokens);
  const auto file = gguf::GgufFile::open(dir / "model.gguf");
  EXPECT_EQ(file.architecture(), pc.arch);
  auto loaded = model::Model::load(file, ctx);
  model::KvCache cache(loaded->config(), 32);
  std::vector<float> got;
  loaded->forward(tokens, cache, got, true);
  ASSERT_EQ(got.size(), want.size());
  double max_ref = 0, max_err = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i] - want[i])));
  }
  EXPECT_GT(max_ref, 0.0);
  // Bit for bit: the same quantizers, kernels and float operations in the same order (a value
  // summed in another order can cross an int8 rounding boundary of the next layer and move the
  // logits by a percent, as the half-split RoPE layout of bitnet files did before its Q and K
  // rows were loaded in the adjacent-pair order).
  EXPECT_EQ(max_err, 0.0) << pc.name << " on " << kernels::isa_name(ctx.isa()) << ": max error "
                          << max_err << " of " << max_ref;
  fs::remove_all(dir);
}

TEST_P(ExportParity, InferenceLogitsEqualTheTrainersQuantizedForward) {
  check_parity(GetParam(), quiet_kernels(2));
  if (kernels::isa_supported(kernels::Isa::kAvx2, cpu_info().features)) {
    kernels::KernelOptions avx2 = quiet_kernels(2);
    avx2.isa = kernels::Isa::kAvx2;
    check_parity(GetParam(), avx2);
  }
}

constexpr auto kTq1 = gguf::TensorType::kTQ1_0, kTq2 = gguf::TensorType::kTQ2_0;

INSTANTIATE_TEST_SUITE_P(
    Architectures, ExportParity,
    ::testing::Values(
        ParityCase{"nanochat_mhc2_tq2", 2, false, false, model::FfnActivation::kSwiGlu, "nanochat",
                   kTq2},
        ParityCase{"nanochat_mhc4_tied_relu2_subnorms_tq1", 4, true, true,
                   model::FfnActivation::kReluSquared, "nanochat", kTq1},
        ParityCase{"llama", 1, false, false, model::FfnActivation::kSwiGlu, "llama", kTq2},
        ParityCase{"llama_tied", 1, true, false, model::FfnActivation::kSwiGlu, "llama", kTq1},
        ParityCase{"bitnet", 1, true, true, model::FfnActivation::kSwiGlu, "bitnet", kTq2},
        ParityCase{"bitnet_b158", 1, true, true, model::FfnActivation::kReluSquared, "bitnet-b1.58",
                   kTq2}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Export, ArchitecturesThatCannotExpressTheModelAreRefused) {
  kernels::KernelContext ctx(quiet_kernels(1));
  TrainModel m(small_config(2, false, false, model::FfnActivation::kSwiGlu), ctx);
  std::vector<CheckpointTensor> weights;
  for (const auto& p : m.params()) weights.push_back({p.name, p.value});
  const auto tok = tiny_tokenizer(sample_text(), 300);
  ExportOptions eo;
  eo.arch = "llama";
  try {
    export_gguf(m.config(), weights, tok, eo, "/tmp/never.gguf");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("mHC-lite streams"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists("/tmp/never.gguf"));
}

// A config that trains on `text` in `dir`.
TrainConfig run_config(const fs::path& dir, const std::string& text, std::int64_t steps) {
  write_file_atomic(dir / "corpus.txt", text);
  TrainConfig c =
      parse_train_config(fmt::format(R"(
[model]
dim = 256
n_layers = 1
n_heads = 4
n_kv_heads = 2
ffn_dim = 256
max_seq_len = 32
mhc_n_streams = 2
[training]
batch_size = 4
seq_len = 16
total_steps = {}
warmup_steps = 5
checkpoint_interval = 4
keep_last = 2
eval_interval = 0
eval_batches = 1
[data]
inputs = ["{}"]
tokenizer_vocab_size = 300
validation_fraction = 0.1
[output]
checkpoint_dir = "{}"
)",
                                     steps, (dir / "corpus.txt").string(), (dir / "run").string()),
                         "run.toml");
  return c;
}

std::vector<double> logged_losses(const fs::path& jsonl) {
  std::vector<double> out;
  std::ifstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

TEST(Trainer, OverfitsATinyText) {
  const fs::path dir = temp_dir("overfit");
  TrainConfig c = run_config(dir, sample_text(), 120);
  c.training.adamw_lr = 1e-2;
  c.training.checkpoint_interval = 0;
  kernels::KernelContext ctx(quiet_kernels(2));
  TrainRunOptions o;
  o.config = c;
  const TrainResult r = run_training(o, ctx, [](const std::string&) {});
  EXPECT_TRUE(r.finished);
  const auto losses = logged_losses(dir / "run" / "train.jsonl");
  ASSERT_EQ(losses.size(), 120u);
  // The text is a few dozen distinct lines: the model memorizes most of it.
  EXPECT_GT(losses.front(), 4.5);
  EXPECT_LT(losses.back(), 1.2) << "first " << losses.front();
  EXPECT_TRUE(fs::exists(r.exported));
  fs::remove_all(dir);
}

TEST(Trainer, InterruptedAndResumedRunsMatchAnUninterruptedOne) {
  const fs::path a = temp_dir("straight"), b = temp_dir("resumed");
  const std::string text = sample_text();
  kernels::KernelContext ctx(quiet_kernels(2));
  auto quiet = [](const std::string&) {};
  TrainRunOptions straight;
  straight.config = run_config(a, text, 10);
  run_training(straight, ctx, quiet);

  TrainRunOptions first;
  first.config = run_config(b, text, 10);
  first.stop_after = 6;  // stops after a checkpoint that is not on the interval
  const TrainResult r1 = run_training(first, ctx, quiet);
  EXPECT_FALSE(r1.finished);
  EXPECT_EQ(r1.steps, 6);
  // Without --resume an existing run is never overwritten.
  EXPECT_THROW(run_training(first, ctx, quiet), UsageError);
  TrainRunOptions second = first;
  second.stop_after = 0;
  second.resume = true;
  const TrainResult r2 = run_training(second, ctx, quiet);
  EXPECT_TRUE(r2.finished);

  const auto want = logged_losses(a / "run" / "train.jsonl");
  const auto got = logged_losses(b / "run" / "train.jsonl");
  ASSERT_EQ(want.size(), 10u);
  EXPECT_EQ(got, want);  // bit for bit
  // Same final weights: the exported files are identical.
  EXPECT_EQ(read_file(a / "run" / "model.gguf"), read_file(b / "run" / "model.gguf"));
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, DamagedCheckpointsAreDetectedAndTheOlderOneIsUsed) {
  const fs::path dir = temp_dir("damaged");
  kernels::KernelContext ctx(quiet_kernels(1));
  std::vector<std::string> logs;
  TrainRunOptions o;
  o.config = run_config(dir, sample_text(), 12);
  o.stop_after = 8;  // checkpoints at 4 and 8
  run_training(o, ctx, [](const std::string&) {});
  const auto all = list_checkpoints(dir / "run");
  ASSERT_EQ(all.size(), 2u);
  // Truncate the newest.
  const std::string bytes = read_file(all[0]);
  write_file_atomic(all[0], std::string_view(bytes).substr(0, bytes.size() / 2));
  try {
    (void)load_checkpoint(all[0]);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
  o.resume = true;
  o.stop_after = 0;
  const TrainResult r = run_training(o, ctx, [&](const std::string& l) { logs.push_back(l); });
  EXPECT_TRUE(r.finished);
  bool warned = false, resumed_at_4 = false;
  for (const auto& l : logs) {
    warned |= l.find("trying an older checkpoint") != std::string::npos;
    resumed_at_4 |= l.find("resuming at step 4") != std::string::npos;
  }
  EXPECT_TRUE(warned);
  EXPECT_TRUE(resumed_at_4);
  fs::remove_all(dir);
}

// The trainer draws nothing: it reports each step, validation and record to an observer (the CLI
// draws a table, a bar or JSON lines from these; Python calls back).
TEST(Trainer, ReportsToItsObserver) {
  const fs::path dir = temp_dir("observer");
  kernels::KernelContext ctx(quiet_kernels(1));
  struct Recorder : TrainObserver {
    std::vector<StepReport> steps;
    std::vector<std::int64_t> validations;
    std::vector<std::string> records, messages;
    void on_step(const StepReport& r) override { steps.push_back(r); }
    void on_validation(std::int64_t step, double loss, double bpb) override {
      EXPECT_GT(loss, 0);
      EXPECT_GT(bpb, 0);
      validations.push_back(step);
    }
    void on_record(const std::string& line) override { records.push_back(line); }
    void on_message(const std::string& line) override { messages.push_back(line); }
  } rec;
  TrainRunOptions o;
  o.config = run_config(dir, sample_text(), 6);
  o.config.training.eval_interval = 3;
  const TrainResult r = run_training(o, ctx, rec);
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(rec.steps.size(), 6u);
  for (std::size_t i = 0; i < rec.steps.size(); ++i) {
    EXPECT_EQ(rec.steps[i].step, static_cast<std::int64_t>(i + 1));
    EXPECT_EQ(rec.steps[i].total_steps, 6);
    EXPECT_TRUE(std::isfinite(rec.steps[i].loss));
    EXPECT_GT(rec.steps[i].tokens_per_second, 0);
  }
  EXPECT_EQ(rec.steps.back().eta_seconds, 0);
  EXPECT_EQ(rec.validations, (std::vector<std::int64_t>{3, 6}));
  // Every record is a line of train.jsonl, in order.
  std::vector<std::string> lines;
  std::istringstream in(read_file(dir / "run" / "train.jsonl"));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_EQ(rec.records, lines);
  EXPECT_FALSE(rec.messages.empty());  // data preparation
  for (const auto& m : rec.messages) EXPECT_EQ(m.find('\033'), std::string::npos) << m;
  fs::remove_all(dir);
}

TEST(Trainer, ANanLossStopsTheRunAndKeepsTheCheckpoints) {
  const fs::path dir = temp_dir("nan");
  kernels::KernelContext ctx(quiet_kernels(1));
  TrainRunOptions o;
  o.config = run_config(dir, sample_text(), 10);
  o.stop_after = 2;
  run_training(o, ctx, [](const std::string&) {});
  // Poison the weights of the newest checkpoint (a valid file whose training diverged). The
  // int8 activation quantizer turns NaN activations into finite codes, so the loss stays finite;
  // the gradient norm does not.
  const auto saved = list_checkpoints(dir / "run");
  ASSERT_FALSE(saved.empty());
  Checkpoint c = load_checkpoint(saved.front());
  for (auto& t : c.tensors) {
    if (t.name == model::tensors::kOutputNorm) std::fill(t.data.begin(), t.data.end(), NAN);
  }
  save_checkpoint(dir / "run", c, 5);
  o.resume = true;
  o.stop_after = 0;
  try {
    run_training(o, ctx, [](const std::string&) {});
    FAIL() << "a NaN loss did not stop the run";
  } catch (const Error& e) {
    const std::string what = e.what();
    SCOPED_TRACE(what);
    EXPECT_NE(what.find("step 3: the gradient norm is nan"), std::string::npos) << what;
    EXPECT_NE(what.find("step-00000002.nckpt, is kept"), std::string::npos) << what;
  }
  EXPECT_EQ(list_checkpoints(dir / "run").size(), saved.size());  // nothing new written
  EXPECT_FALSE(fs::exists(dir / "run" / "model.gguf"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nanochat::train
