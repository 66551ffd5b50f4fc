#include "nanochat/train/init.hpp"

#include <system_error>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/ternary/blocks.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/train/data.hpp"
#include "nanochat/train/export.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::train {
namespace fs = std::filesystem;
namespace {

InitModel from_checkpoint(const fs::path& path) {
  const Checkpoint c = load_checkpoint(path);
  InitModel m;
  m.source = path;
  m.config = checkpoint_model_config(c);
  m.weights = checkpoint_weights(c);
  m.tokenizer_gguf = c.tokenizer_gguf;
  return m;
}

InitModel from_gguf(const fs::path& path) {
  const auto file = gguf::GgufFile::open(path);
  const std::string arch = file.get_string("general.architecture").value_or("");
  if (arch != "nanochat") {
    fail<UsageError>(
        "--init {}: architecture '{}'; nanochat trains its own architecture only (a 'nanochat' "
        "GGUF file or a checkpoint)",
        path.string(), arch);
  }
  InitModel m;
  m.source = path;
  m.config = model::ModelConfig::from_gguf(file);
  for (const auto& t : file.tensors()) {
    CheckpointTensor w;
    w.name = t.name;
    const bool tq2 = t.type.is(gguf::TensorType::kTQ2_0);
    if (tq2 || t.type.is(gguf::TensorType::kTQ1_0)) {  // trit x block scale
      const auto n = static_cast<std::size_t>(t.elements());
      std::vector<std::int8_t> trits(n);
      std::vector<float> scales(n / 256);
      const auto data = file.tensor_data(t);
      if (tq2) {
        ternary::decode_tq2_0(data, trits, scales);
      } else {
        ternary::decode_tq1_0(data, trits, scales);
      }
      // The trainer quantizes with scale = mean|w| over the tensor. With w = trit * s / p, where
      // p is the share of non-zero trits, that mean is s again and round(w / s) gives back the
      // trits, so the first forward equals the file's model.
      std::size_t nonzero = 0;
      for (auto q : trits) nonzero += q != 0;
      const double p = nonzero > 0 ? static_cast<double>(nonzero) / static_cast<double>(n) : 1.0;
      w.data.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        w.data[i] = static_cast<float>(trits[i] * static_cast<double>(scales[i / 256]) / p);
      }
    } else {
      w.data = model::dequantize_tensor(file, t.name);
    }
    m.weights.push_back(std::move(w));
  }
  m.tokenizer_gguf = tokenizer_only_gguf(path);
  return m;
}

}  // namespace

InitModel load_init_model(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const auto found = list_checkpoints(path);
    if (found.empty()) fail<UsageError>("--init {}: the folder holds no checkpoint", path.string());
    return from_checkpoint(found.front());
  }
  if (!fs::is_regular_file(path, ec)) {
    fail<UsageError>(
        "--init {}: no such file; name a checkpoint (.nckpt), a run's folder or a "
        "nanochat GGUF model",
        path.string());
  }
  if (path.extension() == ".gguf") return from_gguf(path);
  return from_checkpoint(path);
}

}  // namespace nanochat::train
