// Byte-level BPE training. Text is split with the llama-bpe (LLaMA 3) pre-tokenizer, words are
// byte-encoded as GPT-2 does, and the most frequent adjacent pair is merged until the vocabulary
// is full. The result is written as standard tokenizer.ggml.* keys (model gpt2, pre llama-bpe),
// so nanochat and llama.cpp load and encode it the same way.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nanochat::gguf {
class GgufWriter;
}

namespace nanochat::model {

struct BpeTrainOptions {
  std::size_t vocab_size = 4096;  // including the 256 byte tokens and the special tokens
  std::vector<std::string> special_tokens = {"<|bos|>", "<|eos|>", "<|pad|>"};
  std::uint64_t min_pair_count = 2;  // stop early when no pair occurs this often
};

struct BpeVocab {
  std::vector<std::string> tokens;  // byte-level text of each token
  std::vector<std::int32_t> types;  // llama.cpp token types (1 normal, 3 control)
  std::vector<std::string> merges;  // "left right", in merge order
  std::int32_t bos = -1, eos = -1, pad = -1;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainOptions options);
  ~BpeTrainer();

  // Adds text to the corpus (pre-tokenized and counted right away; the text is not kept).
  void add_text(std::string_view text);
  std::uint64_t bytes_seen() const { return bytes_; }
  std::size_t distinct_words() const;

  // Runs the merges. `progress(done, total)` is called now and then.
  BpeVocab train(const std::function<void(std::size_t, std::size_t)>& progress = {});

 private:
  struct State;
  BpeTrainOptions options_;
  std::uint64_t bytes_ = 0;
  std::unique_ptr<State> state_;
};

// Adds the tokenizer.ggml.* keys for `vocab` (and, for llama.cpp's vocab-only loading, a minimal
// llama architecture header when `architecture_header` is set).
void write_tokenizer_metadata(gguf::GgufWriter& writer, const BpeVocab& vocab,
                              bool architecture_header);

}  // namespace nanochat::model
