// nanochat model random: a random-weight model of any architecture nanochat runs (for tests and
// benchmarks) with the tokenizer of another GGUF file or a placeholder vocabulary.
#include <fmt/format.h>

#include <memory>
#include <optional>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/byte_level.hpp"
#include "nanochat/model/random_model.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::cli {
namespace {

struct Options {
  std::string output;
  std::string tokenizer;
  std::int64_t vocab = 0;
  model::ModelConfig config;
  std::string activation;
  std::string ternary = "tq2_0";
  std::uint64_t seed = 1;
  std::string embedding = "f32";
  std::string output_type;
  std::string arch = "nanochat";
  bool scale_tensors = false;
};

// ggml type of a float tensor named on the command line.
gguf::TensorType float_type(const std::string& flag, const std::string& name) {
  if (name == "f32") return gguf::TensorType::kF32;
  if (name == "f16") return gguf::TensorType::kF16;
  if (name == "bf16") return gguf::TensorType::kBF16;
  if (name == "q8_0") return gguf::TensorType::kQ8_0;
  if (name == "q4_0") return gguf::TensorType::kQ4_0;
  if (name == "q4_1") return gguf::TensorType::kQ4_1;
  if (name == "q5_0") return gguf::TensorType::kQ5_0;
  if (name == "q5_1") return gguf::TensorType::kQ5_1;
  if (name == "q4_k") return gguf::TensorType::kQ4_K;
  if (name == "q5_k") return gguf::TensorType::kQ5_K;
  if (name == "q6_k") return gguf::TensorType::kQ6_K;
  fail<UsageError>("{} {}: use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k",
                   flag, name);
}

// A byte-level vocabulary of `n` tokens for shape-only models (benchmarks): the 256 byte
// characters, then placeholder tokens, no merges.
void synthetic_tokenizer(gguf::GgufWriter& w, std::int64_t n) {
  const auto& bytes = model::byte_level_chars();
  std::vector<std::string> tokens(bytes.begin(), bytes.end());
  std::vector<std::int32_t> types(256, 1);
  for (std::int64_t i = 256; i < n - 1; ++i) {
    tokens.push_back(fmt::format("<|placeholder_{}|>", i));
    types.push_back(4);
  }
  tokens.push_back("<|eos|>");
  types.push_back(3);
  w.set("tokenizer.ggml.model", gguf::Value("gpt2"));
  w.set("tokenizer.ggml.pre", gguf::Value("gpt-2"));
  w.set("tokenizer.ggml.tokens", gguf::string_array(tokens));
  w.set("tokenizer.ggml.token_type",
        gguf::numeric_array<std::int32_t>(gguf::ValueType::kInt32, types));
  w.set("tokenizer.ggml.merges", gguf::string_array({}));
  w.set("tokenizer.ggml.eos_token_id", gguf::Value(static_cast<std::uint32_t>(n - 1)));
}

void run(Options o) {
  if (o.tokenizer.empty() == (o.vocab == 0)) {
    fail<UsageError>("pass either --tokenizer FILE or --vocab N (a placeholder vocabulary)");
  }
  std::optional<gguf::GgufFile> tok;
  if (!o.tokenizer.empty()) {
    tok.emplace(gguf::GgufFile::open(o.tokenizer, gguf::ReadOptions{true}));
    const auto* tokens = tok->get_string_array("tokenizer.ggml.tokens");
    if (tokens == nullptr)
      fail<UsageError>("--tokenizer {}: the file has no tokenizer", o.tokenizer);
    o.config.vocab_size = static_cast<std::int64_t>(tokens->size());
  } else {
    if (o.vocab < 257 || o.vocab > (1 << 22))
      fail<UsageError>("--vocab {}: use 257 to 4194304", o.vocab);
    o.config.vocab_size = o.vocab;
  }
  if (o.activation.empty()) {
    o.activation = o.arch == "bitnet-b1.58" ? "relu2" : "swiglu";
  }
  if (o.activation == "swiglu") {
    o.config.ffn_activation = model::FfnActivation::kSwiGlu;
  } else if (o.activation == "relu2") {
    o.config.ffn_activation = model::FfnActivation::kReluSquared;
  } else {
    fail<UsageError>("--act {}: use swiglu or relu2", o.activation);
  }
  model::RandomModelOptions r;
  r.seed = o.seed;
  if (!model::is_supported_architecture(o.arch)) {
    fail<UsageError>("--arch {}: use nanochat, bitnet, bitnet-b1.58 or llama", o.arch);
  }
  const model::ModelConfig fixed = model::config_for_architecture(o.arch);
  o.config.architecture = o.arch;
  o.config.rope_style = fixed.rope_style;
  if (o.arch != "nanochat") {
    if (o.config.mhc_streams != 1) {
      fail<UsageError>("--streams {}: only --arch nanochat has mHC-lite streams",
                       o.config.mhc_streams);
    }
    if (o.config.sub_norms && !fixed.sub_norms) {
      fail<UsageError>("--sub-norms: --arch {} has none", o.arch);
    }
    o.config.sub_norms = fixed.sub_norms;
    if (o.arch == "llama" && o.activation != "swiglu") {
      fail<UsageError>("--act {}: --arch llama uses swiglu", o.activation);
    }
  }
  if (o.arch == "bitnet" || o.arch == "bitnet-b1.58") {
    // llama.cpp's bitnet always uses the embedding as the head and refuses extra tensors.
    if (!o.output_type.empty()) {
      fail<UsageError>(
          "--output-type: --arch {} uses the embedding as output head; set "
          "--embedding instead",
          o.arch);
    }
    o.config.tied_embeddings = true;
  }
  r.scale_tensors = o.scale_tensors;
  r.embedding_type = float_type("--embedding", o.embedding);
  if (o.output_type.empty() || o.output_type == "ternary") {
    r.output_type = std::nullopt;
  } else {
    r.output_type = float_type("--output-type", o.output_type);
  }
  if (o.config.tied_embeddings && !o.output_type.empty()) {
    fail<UsageError>("--output-type {}: a --tied model has no output layer", o.output_type);
  }
  if (o.ternary == "tq2_0") {
    r.ternary_type = gguf::TensorType::kTQ2_0;
  } else if (o.ternary == "tq1_0") {
    r.ternary_type = gguf::TensorType::kTQ1_0;
  } else {
    fail<UsageError>("--ternary {}: use tq2_0 or tq1_0", o.ternary);
  }
  if (o.config.dim % 256 != 0 || o.config.ffn_dim % 256 != 0) {
    fail<UsageError>(
        "--dim {} and --ffn {} must be multiples of 256 (ternary rows are whole "
        "256-weight blocks)",
        o.config.dim, o.config.ffn_dim);
  }
  try {
    o.config.validate("the requested model");
  } catch (const FormatError& e) {
    throw UsageError(e.what());
  }
  model::write_random_model(
      o.config, r,
      [&](gguf::GgufWriter& w) {
        if (!tok) {
          synthetic_tokenizer(w, o.vocab);
          return;
        }
        model::copy_tokenizer_metadata(*tok, w);
      },
      o.output);
  fmt::print(stderr, "wrote {} ({}, {} layers, dim {}, vocab {})\n", o.output, o.arch,
             o.config.n_layers, o.config.dim, o.config.vocab_size);
}

}  // namespace

void add_model(CLI::App& app) {
  CLI::App* m = app.add_subcommand("model", "Make model files");
  m->require_subcommand(1);
  auto o = std::make_shared<Options>();
  o->config.dim = 256;
  o->config.n_layers = 2;
  o->config.n_heads = 4;
  o->config.n_kv_heads = 2;
  o->config.ffn_dim = 512;
  o->config.context_length = 256;
  CLI::App* sub =
      m->add_subcommand("random", "Write a tiny random-weight model (for tests and benchmarks)");
  sub->add_option("-o,--output", o->output, "Output GGUF file")->required();
  sub->add_option("--tokenizer", o->tokenizer, "GGUF file whose tokenizer the model uses");
  sub->add_option("--vocab", o->vocab,
                  "Instead of --tokenizer: a placeholder vocabulary of N tokens (shape-only models "
                  "for benchmarks)");
  sub->add_option("--dim", o->config.dim, "Embedding width")->capture_default_str();
  sub->add_option("--layers", o->config.n_layers, "Transformer blocks")->capture_default_str();
  sub->add_option("--heads", o->config.n_heads, "Attention heads")->capture_default_str();
  sub->add_option("--kv-heads", o->config.n_kv_heads, "Key/value heads")->capture_default_str();
  sub->add_option("--ffn", o->config.ffn_dim, "Feed-forward width")->capture_default_str();
  sub->add_option("--ctx", o->config.context_length, "Context length")->capture_default_str();
  sub->add_option("--streams", o->config.mhc_streams, "mHC-lite residual streams: 1, 2 or 4")
      ->capture_default_str();
  sub->add_option("--arch", o->arch,
                  "Architecture: nanochat, bitnet or bitnet-b1.58 (llama.cpp's / bitnet.cpp's "
                  "BitNet b1.58 layout: sub-norms, head tied to the embedding) or llama (ternary "
                  "llama, as TriLM)")
      ->capture_default_str();
  sub->add_option("--act", o->activation,
                  "FFN activation: swiglu or relu2 (default swiglu; relu2 for bitnet-b1.58)");
  sub->add_flag("--sub-norms", o->config.sub_norms, "RMSNorm before attn_output and ffn_down");
  sub->add_flag("--tied", o->config.tied_embeddings, "Output head tied to the embedding");
  sub->add_option("--ternary", o->ternary, "Ternary block format: tq2_0 or tq1_0")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  sub->add_option("--embedding", o->embedding,
                  "Embedding type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or "
                  "q6_k")
      ->capture_default_str();
  sub->add_option("--output-type", o->output_type,
                  "Output layer: ternary (default), q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, "
                  "q6_k, f16, bf16 or f32");
  sub->add_flag("--scale-tensors", o->scale_tensors,
                "Put each ternary layer's scale in a one-value .scale tensor (llama.cpp's bitnet "
                "layout) instead of the blocks");
  sub->callback([o] { run(*o); });
}

}  // namespace nanochat::cli
