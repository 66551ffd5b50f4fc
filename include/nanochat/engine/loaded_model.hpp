// A loaded model: the one object that owns everything a model needs to run — the mapped GGUF
// file, the kernel context (thread pool, autotuner), the repacked weights, the tokenizer and the
// chat template. The CLI, the server and the Python module load models only through this.
//
//   auto lm = engine::LoadedModel::load("models/nanochat-rust.gguf");
//   engine::Session session(lm);                 // owns its KV cache; borrows the model
//   auto r = session.generate("fn main() {", {});
//
// Thread-safety: a LoadedModel is shared (std::shared_ptr) by any number of sessions on any
// threads. forward() serializes the model's passes (they share one thread pool): sessions on
// different threads interleave token by token.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/model/chat_template.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/model/tokenizer.hpp"

namespace nanochat::engine {

struct LoadOptions {
  kernels::KernelOptions kernels;   // threads (0: physical cores), ISA, autotuning
  std::string chat_template;        // a template name overriding the file's; empty: the file's
  model::LoadProgress on_progress;  // bytes of weights repacked so far, as loading goes
  // The repacked-weights cache (model/weight_cache.hpp) for files of at least this many bytes,
  // in weight_cache_file(path); off when NANOCHAT_NO_WEIGHT_CACHE is set (to anything but "" or
  // "0") or when the weights are placed on a NUMA node (a mapped file cannot be).
  bool weight_cache = true;
  std::uint64_t weight_cache_min_bytes = std::uint64_t{64} << 20;
};

// Where the repacked weights of the model file `path` are kept: cache_dir()/weights/, one file
// per model path and CPU (a newer file at the same path replaces the older one's).
std::filesystem::path weight_cache_file(const std::filesystem::path& path);

class LoadedModel {
 public:
  // Opens, validates and loads `path`. Throws IoError / FormatError naming the file.
  static std::shared_ptr<LoadedModel> load(const std::filesystem::path& path,
                                           const LoadOptions& options = {});
  ~LoadedModel();
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const gguf::GgufFile& file() const { return file_; }
  const model::ModelConfig& config() const { return model_->config(); }
  const model::Tokenizer& tokenizer() const { return tokenizer_; }
  const model::ChatTemplate& chat_template() const { return template_; }
  kernels::KernelContext& kernels() { return *kernels_; }
  std::size_t bytes_per_token() const { return model_->bytes_per_token(); }
  double load_ms() const { return load_ms_; }

  // Model::forward, one pass at a time across all sessions.
  void forward(std::span<const model::TokenId> tokens, model::KvCache& cache,
               std::vector<float>& logits, bool all_logits = false);
  // Model::forward_batch, likewise one pass at a time.
  void forward_batch(std::span<const model::Model::Segment> segments,
                     model::ForwardBuffers& buffers, std::vector<float>& logits);

 private:
  LoadedModel(const std::filesystem::path& path, gguf::GgufFile file, const LoadOptions& o);

  std::filesystem::path path_;
  gguf::GgufFile file_;
  std::unique_ptr<kernels::KernelContext> kernels_;
  std::unique_ptr<model::Model> model_;
  model::Tokenizer tokenizer_;
  model::ChatTemplate template_;
  double load_ms_ = 0;
  std::mutex forward_mutex_;
};

}  // namespace nanochat::engine
