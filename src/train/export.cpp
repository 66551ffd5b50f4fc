#include "nanochat/train/export.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/tensor_names.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/ternary/quantize.hpp"
#include "nanochat/train/checkpoint.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::train {
namespace {

// Rows of a (heads * D, C) projection reordered from adjacent RoPE pairs (2i, 2i+1) to NeoX
// halves (i, i + D/2), head by head.
std::vector<std::int8_t> neox_rows(const std::vector<std::int8_t>& w, std::int64_t heads,
                                   std::int64_t d, std::int64_t cols) {
  std::vector<std::int8_t> out(w.size());
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t j = 0; j < d; ++j) {
      const std::int64_t src = j < d / 2 ? 2 * j : 2 * (j - d / 2) + 1;
      std::copy_n(w.data() + (h * d + src) * cols, cols, out.data() + (h * d + j) * cols);
    }
  }
  return out;
}

}  // namespace

model::ModelConfig checkpoint_model_config(const Checkpoint& c) {
  return parse_train_config(c.config_toml, "checkpoint config").model;
}

std::vector<CheckpointTensor> checkpoint_weights(const Checkpoint& c) {
  std::vector<CheckpointTensor> weights;
  for (const auto& t : c.tensors) {
    if (t.name.ends_with(".weight")) weights.push_back(t);
  }
  return weights;
}

void export_gguf(const model::ModelConfig& config, const std::vector<CheckpointTensor>& tensors,
                 std::span<const std::uint8_t> tokenizer_gguf, const ExportOptions& o,
                 const std::filesystem::path& out) {
  model::ModelConfig c = config;
  const std::string& arch = o.arch;
  if (arch != "nanochat") {
    auto need = [&](bool ok, const char* why) {
      if (!ok) fail<UsageError>("--arch {}: {}; export it as --arch nanochat", arch, why);
    };
    need(arch == "llama" || arch == "bitnet" || arch == "bitnet-b1.58",
         "unknown architecture (use nanochat, llama, bitnet or bitnet-b1.58)");
    need(c.mhc_streams == 1, "the model has mHC-lite streams, which only nanochat runs");
    if (arch == "llama") {
      need(!c.sub_norms, "the model has sub-norms, which llama lacks (use bitnet)");
      need(c.ffn_activation == model::FfnActivation::kSwiGlu, "llama's FFN is SwiGLU");
    } else {
      need(c.sub_norms, "BitNet layouts have sub-norms and this model has none (use llama)");
      need(c.tied_embeddings, "llama.cpp's bitnet uses the embedding as head; the model is untied");
      if (arch == "bitnet") {
        need(c.ffn_activation == model::FfnActivation::kSwiGlu,
             "llama.cpp runs bitnet with SiLU; export relu2 models as bitnet-b1.58");
      } else {
        need(c.ffn_activation == model::FfnActivation::kReluSquared,
             "bitnet-b1.58 is the squared-ReLU layout; this model is SwiGLU (use bitnet)");
      }
    }
    c.architecture = arch;
    c.rope_style = model::config_for_architecture(arch).rope_style;
  }
  const bool tq2 = o.ternary_type == gguf::TensorType::kTQ2_0;
  if (!tq2 && o.ternary_type != gguf::TensorType::kTQ1_0) {
    fail("export: ternary type must be TQ1_0/TQ2_0");
  }

  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value(arch));
  w.set("general.name", gguf::Value(o.name.empty() ? std::string("nanochat") : o.name));
  const gguf::FileType file_type = tq2 ? gguf::FileType::kTQ2_0 : gguf::FileType::kTQ1_0;
  w.set("general.file_type", gguf::Value(static_cast<std::uint32_t>(file_type)));
  c.write_gguf(w);
  model::copy_tokenizer_metadata(gguf::GgufFile::parse(tokenizer_gguf, "tokenizer"), w);

  const bool permute = c.rope_style == model::RopeStyle::kHalves;
  for (const auto& t : tensors) {
    const std::string& name = t.name;
    const std::string_view part = model::tensors::part_of(name);
    if (!model::tensors::is_ternary_layer(name)) {
      std::vector<std::uint64_t> dims = {t.data.size()};
      if (name == model::tensors::kEmbedding) {
        dims = {static_cast<std::uint64_t>(c.dim), static_cast<std::uint64_t>(c.vocab_size)};
      }
      w.add_tensor(name, gguf::TensorType::kF32, dims,
                   {reinterpret_cast<const std::uint8_t*>(t.data.data()), t.data.size() * 4});
      continue;
    }
    const auto in = static_cast<std::int64_t>(part == model::tensors::kFfnDown ? c.ffn_dim : c.dim);
    const auto rows = static_cast<std::int64_t>(t.data.size()) / in;
    // The trits and fp16 scale the trainer's forward uses (same quantizer, same input).
    const ternary::TernaryTensor q = ternary::quantize_absmean(t.data, rows, in, 0);
    const float scale = fp16_to_fp32(fp32_to_fp16(q.scales[0]));
    std::vector<std::int8_t> trits = q.trits;
    if (permute && (part == model::tensors::kAttnQ || part == model::tensors::kAttnK)) {
      trits = neox_rows(trits, rows / c.head_dim(), c.head_dim(), in);
    }
    w.add_tensor(name, o.ternary_type,
                 {static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(rows)},
                 model::encode_ternary(o.ternary_type, trits, scale));
  }
  w.write(out);
}

std::int64_t export_checkpoint(const std::filesystem::path& checkpoint,
                               const std::filesystem::path& out, const ExportOptions& options) {
  std::filesystem::path path = checkpoint;
  if (std::filesystem::is_directory(path)) {
    const auto all = list_checkpoints(path);
    if (all.empty()) {
      fail<UsageError>("{}: no checkpoint (step-*.nckpt) in this folder", checkpoint.string());
    }
    path = all.front();
  }
  const Checkpoint c = load_checkpoint(path);
  if (parse_train_config(c.config_toml, "checkpoint config").quantization != "ternary") {
    fail<UsageError>(
        "{}: trained with model.quantization = \"none\" (float layers, for comparison); only "
        "ternary models can be exported",
        path.string());
  }
  ExportOptions o = options;
  if (o.name.empty()) o.name = path.parent_path().filename().string();  // the run's folder
  // The saved config already holds the tokenizer's vocab_size.
  export_gguf(checkpoint_model_config(c), checkpoint_weights(c), c.tokenizer_gguf, o, out);
  return c.step;
}

}  // namespace nanochat::train
