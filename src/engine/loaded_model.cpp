#include "nanochat/engine/loaded_model.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <string_view>

#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/sha256.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::engine {

std::filesystem::path weight_cache_file(const std::filesystem::path& path) {
  Sha256 h;
  h.update(std::filesystem::absolute(path).lexically_normal().string());
  return cache_dir() / "weights" /
         fmt::format("{}-{}.bin", h.finish().substr(0, 16), cpu_info().signature());
}

namespace {

std::filesystem::path weight_cache_for(const std::filesystem::path& path,
                                       const gguf::GgufFile& file, const LoadOptions& o) {
  const char* off = std::getenv("NANOCHAT_NO_WEIGHT_CACHE");
  if (off != nullptr && !std::string_view(off).empty() && std::string_view(off) != "0") return {};
  if (!o.weight_cache || o.kernels.numa_node >= 0) return {};
  if (file.file_size() < o.weight_cache_min_bytes) return {};
  return weight_cache_file(path);
}

}  // namespace

std::shared_ptr<LoadedModel> LoadedModel::load(const std::filesystem::path& path,
                                               const LoadOptions& options) {
  const double start = now_seconds();
  auto lm =
      std::shared_ptr<LoadedModel>(new LoadedModel(path, gguf::GgufFile::open(path), options));
  // One decoded token now: the autotuner measures the decode shapes during loading, not in the
  // middle of the first answer's output.
  model::KvCache scratch(lm->config(), 1);
  std::vector<float> logits;
  const model::TokenId first = lm->tokenizer().bos().value_or(0);
  lm->forward(std::span<const model::TokenId>(&first, 1), scratch, logits);
  lm->load_ms_ = (now_seconds() - start) * 1e3;
  return lm;
}

LoadedModel::LoadedModel(const std::filesystem::path& path, gguf::GgufFile file,
                         const LoadOptions& o)
    : path_(path),
      file_(std::move(file)),
      kernels_(std::make_unique<kernels::KernelContext>(o.kernels)),
      model_(model::Model::load(file_, *kernels_, o.on_progress, weight_cache_for(path, file_, o))),
      tokenizer_(model::Tokenizer::from_gguf(file_)),
      template_(o.chat_template.empty()
                    ? model::ChatTemplate::detect(
                          file_.get_string("tokenizer.chat_template").value_or(""))
                    : model::ChatTemplate::named(o.chat_template)) {
  if (static_cast<std::int64_t>(tokenizer_.size()) != model_->config().vocab_size) {
    fail<FormatError>("{}: the tokenizer has {} tokens but the model's vocabulary has {}",
                      file_.name(), tokenizer_.size(), model_->config().vocab_size);
  }
}

LoadedModel::~LoadedModel() = default;

void LoadedModel::forward(std::span<const model::TokenId> tokens, model::KvCache& cache,
                          std::vector<float>& logits, bool all_logits) {
  const std::lock_guard lock(forward_mutex_);
  model_->forward(tokens, cache, logits, all_logits);
}

void LoadedModel::forward_batch(std::span<const model::Model::Segment> segments,
                                model::ForwardBuffers& buffers, std::vector<float>& logits) {
  const std::lock_guard lock(forward_mutex_);
  model_->forward_batch(segments, buffers, logits);
}

}  // namespace nanochat::engine
