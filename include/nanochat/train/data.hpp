// Training data: text files, folders and globs -> a tokenizer (trained BPE, or the one in a GGUF
// file) -> token shards on disk, mapped into memory, with a held-out validation tail. Preparation
// is cached under <checkpoint_dir>/data and reused while the inputs (paths, sizes, modification
// times) and settings are unchanged. Batches are a pure function of (seed, step, micro-step),
// so an interrupted run resumes on exactly the batches it would have seen.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nanochat/model/tokenizer.hpp"
#include "nanochat/train/config.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::train {

class Dataset {
 public:
  // Prepares (or reuses) the data for `config`. `log` receives progress lines. Throws UsageError
  // for missing inputs, an unreadable tokenizer or too little text.
  static Dataset prepare(const TrainConfig& config,
                         const std::function<void(const std::string&)>& log);

  std::span<const std::int32_t> train_tokens() const;
  std::span<const std::int32_t> val_tokens() const;
  const model::Tokenizer& tokenizer() const { return *tokenizer_; }
  // The tokenizer as a GGUF file's bytes (tokenizer.ggml.* keys only), for checkpoints/exports.
  const std::vector<std::uint8_t>& tokenizer_gguf() const { return tokenizer_gguf_; }
  // UTF-8 bytes each token stands for (for bits per byte).
  const std::vector<std::uint32_t>& token_bytes() const { return token_bytes_; }
  const std::string& fingerprint() const { return fingerprint_; }
  bool reused() const { return reused_; }

 private:
  std::optional<MappedFile> train_, val_;
  std::optional<model::Tokenizer> tokenizer_;
  std::vector<std::uint8_t> tokenizer_gguf_;
  std::vector<std::uint32_t> token_bytes_;
  std::string fingerprint_;
  bool reused_ = false;
};

// Random windows of seq + 1 tokens: inputs (B, T) and the next tokens as targets (B, T).
class Batcher {
 public:
  Batcher(std::span<const std::int32_t> tokens, std::int64_t batch, std::int64_t seq,
          std::uint64_t seed);
  void fill(std::int64_t step, std::int64_t micro, std::vector<std::int32_t>& inputs,
            std::vector<std::int32_t>& targets) const;

 private:
  std::span<const std::int32_t> tokens_;
  std::int64_t batch_, seq_;
  std::uint64_t seed_;
};

// Tokenizer-only GGUF bytes from any GGUF file's tokenizer.* keys.
std::vector<std::uint8_t> tokenizer_only_gguf(const std::filesystem::path& path);

}  // namespace nanochat::train
