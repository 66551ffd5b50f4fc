// Fine-tuning: --init from a checkpoint or a GGUF model (the first forward equals the file's
// model), shape and architecture checks, chat data (only the assistant's tokens are targets; bad
// records name the file and line) and the loss's context-only targets.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/model/bpe_trainer.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/random_model.hpp"
#include "nanochat/train/checkpoint.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/data.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/train/init.hpp"
#include "nanochat/train/ops.hpp"
#include "nanochat/train/optim.hpp"
#include "nanochat/train/train_model.hpp"
#include "nanochat/train/trainer.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "test_helpers.hpp"

namespace nanochat::train {
namespace {

namespace fs = std::filesystem;

using nanochat::test_support::quiet_kernels;
using nanochat::test_support::temp_dir;

std::string sample_text() {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += fmt::format("fn f{}(x: i32) -> i32 {{\n    x * {} + {}\n}}\n\n", i % 7, i, i * 3 % 11);
  }
  return text;
}

// A base run of a few steps on sample_text() in dir/base; returns its config.
TrainConfig base_config(const fs::path& dir, std::int64_t steps, int dim = 256) {
  write_file_atomic(dir / "corpus.txt", sample_text());
  return parse_train_config(
      fmt::format(R"(
[model]
dim = {}
n_layers = 1
n_heads = 4
n_kv_heads = 2
ffn_dim = 256
max_seq_len = 64
[training]
batch_size = 4
seq_len = 32
total_steps = {}
warmup_steps = 1
checkpoint_interval = 0
eval_interval = 0
eval_batches = 1
[data]
inputs = ["{}"]
tokenizer_vocab_size = 300
validation_fraction = 0
[output]
checkpoint_dir = "{}"
)",
                  dim, steps, (dir / "corpus.txt").string(), (dir / "base").string()),
      "base.toml");
}

void write_chat(const fs::path& path) {
  std::ofstream out(path);
  for (int i = 0; i < 30; ++i) {
    nlohmann::json j = {
        {"messages",
         {{{"role", "user"}, {"content", fmt::format("Write a Rust function that adds {}.", i)}},
          {{"role", "assistant"},
           {"content", fmt::format("fn add{}(x: i32) -> i32 {{\n    x + {}\n}}", i, i)}}}}};
    out << j.dump() << "\n";
  }
}

TrainConfig chat_config(const fs::path& dir, const fs::path& chat, std::int64_t steps) {
  TrainConfig c = base_config(dir, steps);
  c.data.inputs = {chat.string()};
  c.data.format = "chat";
  c.data.validation_fraction = 0;
  c.output.checkpoint_dir = dir / "chat";
  return c;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, double* max_ref) {
  double err = 0;
  *max_ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    *max_ref = std::max(*max_ref, std::fabs(static_cast<double>(a[i])));
    err = std::max(err, std::fabs(static_cast<double>(a[i] - b[i])));
  }
  return err;
}

class Finetune : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  kernels::KernelContext ctx_{quiet_kernels(2)};
  std::function<void(const std::string&)> quiet_ = [](const std::string&) {};
};

TEST_F(Finetune, InitFromAGgufModelStartsAtThatModel) {
  TrainRunOptions base;
  base.config = base_config(dir_, 6);
  const TrainResult r = run_training(base, ctx_, quiet_);
  ASSERT_TRUE(fs::exists(r.exported));

  const InitModel init = load_init_model(r.exported);
  TrainModel m(init.config, ctx_);
  m.init(99);
  for (auto& p : m.params()) {
    const auto it = std::find_if(init.weights.begin(), init.weights.end(),
                                 [&](const CheckpointTensor& w) { return w.name == p.name; });
    ASSERT_NE(it, init.weights.end()) << p.name;
    p.value = it->data;
  }
  std::vector<std::int32_t> tokens = {1, 50, 7, 299, 120, 3, 3, 42, 17, 200, 88, 5};
  for (auto& t : tokens) t %= static_cast<std::int32_t>(init.config.vocab_size);
  const std::vector<float> got = m.logits(tokens);
  // The file's own model, through the inference engine.
  const auto file = gguf::GgufFile::open(r.exported);
  auto loaded = model::Model::load(file, ctx_);
  model::KvCache cache(loaded->config(), 64);
  std::vector<float> want;
  loaded->forward(tokens, cache, want, true);
  ASSERT_EQ(got.size(), want.size());
  double max_ref = 0;
  const double err = max_abs_diff(want, got, &max_ref);
  EXPECT_GT(max_ref, 0.0);
  EXPECT_LE(err, 1e-3 * max_ref) << "max error " << err << " of " << max_ref;
}

TEST_F(Finetune, InitFromACheckpointFolderTakesItsExactWeights) {
  TrainRunOptions base;
  base.config = base_config(dir_, 4);
  run_training(base, ctx_, quiet_);
  const InitModel init = load_init_model(dir_ / "base");
  const Checkpoint c = load_checkpoint(list_checkpoints(dir_ / "base").front());
  for (const auto& w : init.weights) {
    const CheckpointTensor* t = c.find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->data, w.data) << w.name;
  }
  EXPECT_EQ(init.tokenizer_gguf, c.tokenizer_gguf);
  EXPECT_EQ(init.config.dim, 256);
}

TEST_F(Finetune, InitOfAnotherShapeOrArchitectureIsOneClearError) {
  TrainRunOptions base;
  base.config = base_config(dir_, 2);
  const TrainResult r = run_training(base, ctx_, quiet_);
  write_chat(dir_ / "chat.jsonl");

  TrainRunOptions other;
  other.config = chat_config(dir_, dir_ / "chat.jsonl", 2);
  other.config.model.dim = 512;
  other.config.model.n_heads = 8;
  other.init = r.exported;
  try {
    run_training(other, ctx_, quiet_);
    FAIL() << "a 512-wide run started from a 256-wide model";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--init"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.dim is 256 in the --init model but 512"),
              std::string::npos)
        << e.what();
  }

  // A llama-architecture file.
  model::ModelConfig lc = load_init_model(r.exported).config;
  lc.architecture = "llama";
  model::write_random_model(
      lc, model::RandomModelOptions{}, [](gguf::GgufWriter&) {}, dir_ / "llama.gguf");
  try {
    (void)load_init_model(dir_ / "llama.gguf");
    FAIL() << "a llama file was taken as an init model";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'llama'"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)load_init_model(dir_ / "missing.gguf"), UsageError);
}

TEST_F(Finetune, ChatDataTargetsOnlyTheAssistantsTokensAndTheModelLearnsThem) {
  TrainRunOptions base;
  base.config = base_config(dir_, 4);
  const TrainResult r = run_training(base, ctx_, quiet_);
  write_chat(dir_ / "chat.jsonl");

  TrainRunOptions chat;
  chat.config = chat_config(dir_, dir_ / "chat.jsonl", 60);
  chat.config.training.adamw_lr = 1e-2;
  chat.init = r.exported;
  const TrainResult rc = run_training(chat, ctx_, quiet_);
  ASSERT_TRUE(rc.finished);

  // The prepared tokens: targets (>= 0) decode to exactly the answers, each followed by EOS.
  TrainConfig again = chat.config;
  again.data.tokenizer = (dir_ / "chat" / "init-tokenizer.gguf").string();
  const Dataset data = Dataset::prepare(again, quiet_);
  ASSERT_TRUE(data.reused());
  const auto& tok = data.tokenizer();
  std::string targets, context;
  for (const std::int32_t t : data.train_tokens()) {
    if (t >= 0) {
      targets += t == *tok.eos() ? std::string("<EOS>") : tok.piece(t);
    } else {
      context += tok.piece(-t - 1);
    }
  }
  EXPECT_EQ(targets.find("Write a Rust"), std::string::npos);
  EXPECT_NE(targets.find(" fn add7(x: i32) -> i32 {\n    x + 7\n}\n<EOS>"), std::string::npos)
      << targets.substr(0, 200);
  EXPECT_NE(context.find("User: Write a Rust function that adds 7.\nAssistant:"),
            std::string::npos);

  // The exported model carries the template and answers a request in the trained format.
  const auto file = gguf::GgufFile::open(rc.exported);
  const std::string jinja = file.get_string("tokenizer.chat_template").value_or("");
  EXPECT_EQ(model::ChatTemplate::detect(jinja).name(), "plain");
  const auto losses = [&] {
    std::vector<double> v;
    std::ifstream in(dir_ / "chat" / "train.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) v.push_back(j["loss"].get<double>());
    }
    return v;
  }();
  ASSERT_EQ(losses.size(), 60u);
  EXPECT_LT(losses.back(), 0.5 * losses.front()) << losses.front() << " -> " << losses.back();
}

TEST_F(Finetune, BadChatRecordsNameTheFileAndLine) {
  TrainRunOptions base;
  base.config = base_config(dir_, 2);
  const TrainResult r = run_training(base, ctx_, quiet_);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "not a JSON object"},
      {"[1, 2]", "not a JSON object"},
      {R"({"msgs": []})", "no \"messages\" array"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", "role \"robot\""},
      {R"({"messages": [{"role": "user", "content": 3}]})", "string \"role\" and \"content\""},
      {R"({"messages": [{"role": "user", "content": "hi"}]})", "no assistant message"},
  };
  int i = 0;
  for (const auto& [line, want] : cases) {
    const fs::path chat = dir_ / fmt::format("bad{}.jsonl", i);
    write_file_atomic(chat, std::string(R"({"messages": [{"role": "user", "content": "a"}, )") +
                                R"({"role": "assistant", "content": "b"}]})" + "\n" + line + "\n");
    TrainRunOptions o;
    o.config = chat_config(dir_, chat, 2);
    o.config.output.checkpoint_dir = dir_ / fmt::format("bad-run{}", i++);
    o.init = r.exported;
    try {
      run_training(o, ctx_, quiet_);
      ADD_FAILURE() << "accepted: " << line;
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(chat.string() + ":2:"), std::string::npos) << msg;
      EXPECT_NE(msg.find(want), std::string::npos) << msg;
    }
  }
  // A chat run without a model to start from says what to do.
  TrainRunOptions o;
  o.config = chat_config(dir_, dir_ / "bad0.jsonl", 2);
  o.config.output.checkpoint_dir = dir_ / "no-init";
  try {
    run_training(o, ctx_, quiet_);
    ADD_FAILURE() << "a chat run without --init or a tokenizer";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--init"), std::string::npos) << e.what();
  }
}

// model.quantization = "none": the same network with float layers. Without quantizers the
// whole model is differentiable, so its gradients must match central finite differences.
TEST(FloatComparison, GradientsOfTheUnquantizedModelMatchFiniteDifferences) {
  kernels::KernelContext ctx(quiet_kernels(2));
  model::ModelConfig c;
  c.dim = 256;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 256;
  c.vocab_size = 64;
  c.context_length = 16;
  c.mhc_streams = 2;
  TrainModel m(c, ctx);
  m.set_gemm_precision(GemmPrecision::kF32);
  m.set_quantization(false);
  m.init(3);
  const std::vector<std::int32_t> in = {1, 5, 9, 33, 2, 60, 7, 7}, tg = {5, 9, 33, 2, 60, 7, 7, 1};
  auto loss = [&] {
    m.zero_grad();
    return m.train_step(in, tg, 2, 4, 0.0, 1.0f).loss;
  };
  (void)loss();
  // A few weights of every kind of matrix: attention, FFN, head.
  for (auto& p : m.params()) {
    if (!p.ternary) continue;
    const std::vector<float> grad = p.grad;
    // The three weights with the largest gradients, where a wrong backward shows most.
    std::vector<std::size_t> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                      [&](auto x, auto y) { return std::fabs(grad[x]) > std::fabs(grad[y]); });
    ASSERT_GT(std::fabs(grad[order[0]]), 1e-4f) << p.name;
    for (std::size_t i : {order[0], order[1], order[2]}) {
      const float w = p.value[i];
      const float h = 2e-3f;
      p.value[i] = w + h;
      const double up = loss();
      p.value[i] = w - h;
      const double down = loss();
      p.value[i] = w;
      const double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(grad[i], numeric, 1e-5 + 3e-2 * std::fabs(numeric)) << p.name << "[" << i << "]";
    }
  }
  // The ternary model's gradient at the same point differs (straight-through quantizers).
  m.set_quantization(true);
  const double ternary_loss = loss();
  m.set_quantization(false);
  EXPECT_NE(ternary_loss, loss());
}

TEST_F(Finetune, AFloatComparisonRunTrainsAndIsNotExported) {
  TrainRunOptions o;
  o.config = base_config(dir_, 5);
  o.config.quantization = "none";
  const TrainResult r = run_training(o, ctx_, quiet_);
  EXPECT_TRUE(r.finished);
  EXPECT_TRUE(r.exported.empty());
  EXPECT_FALSE(fs::exists(dir_ / "base" / "model.gguf"));
  // Resuming it as a ternary run is refused.
  TrainRunOptions again = o;
  again.resume = true;
  again.config.quantization = "ternary";
  again.config.training.total_steps = 8;
  EXPECT_THROW(run_training(again, ctx_, quiet_), UsageError);
}

TEST(Loss, ContextOnlyTargetsAddNothing) {
  kernels::ThreadPool pool(2);
  const std::int64_t v = 7, n = 5;
  std::vector<float> logits(static_cast<std::size_t>(n * v));
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  const std::vector<std::int32_t> all = {1, 4, 6, 0, 2};
  const std::vector<std::int32_t> some = {-1, 4, -1, 0, -1};
  std::vector<float> d_all(logits.size()), d_some(logits.size());
  const LossStats a = loss_forward_backward(pool, logits.data(), all, v, 0.0, 1.0f, d_all.data());
  const LossStats s = loss_forward_backward(pool, logits.data(), some, v, 0.0, 1.0f, d_some.data());
  // The mean over rows 1 and 3 alone.
  std::vector<float> two(logits.begin() + v, logits.begin() + 2 * v);
  two.insert(two.end(), logits.begin() + 3 * v, logits.begin() + 4 * v);
  std::vector<float> d_two(two.size());
  const LossStats t = loss_forward_backward(pool, two.data(), std::vector<std::int32_t>{4, 0}, v,
                                            0.0, 1.0f, d_two.data());
  EXPECT_NEAR(s.ce, t.ce, 1e-12);
  EXPECT_NE(s.ce, a.ce);
  for (std::int64_t i = 0; i < v; ++i) {
    EXPECT_EQ(d_some[static_cast<std::size_t>(i)], 0.0f);
    EXPECT_EQ(d_some[static_cast<std::size_t>(2 * v + i)], 0.0f);
    EXPECT_FLOAT_EQ(d_some[static_cast<std::size_t>(v + i)], d_two[static_cast<std::size_t>(i)]);
  }
}

}  // namespace
}  // namespace nanochat::train
