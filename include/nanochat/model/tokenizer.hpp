// Tokenizers stored in GGUF files (`tokenizer.ggml.*`), encoding exactly as llama.cpp does:
//  - byte-level BPE (`tokenizer.ggml.model = gpt2`) with the pre-tokenizer named by
//    `tokenizer.ggml.pre` (default, gpt-2, llama-bpe/llama3, deepseek-coder, deepseek-llm,
//    starcoder, refact, qwen2, ...), regular expressions run by PCRE2 with Unicode properties;
//  - SentencePiece-style (`llama`): score-ordered bigram merges over characters, "▁" for spaces,
//    an optional space prefix, and <0xXX> byte fallback.
// User-defined tokens are split out of the text before pre-tokenization (as Hugging Face and
// llama.cpp do); control tokens only when `parse_special` is set.
//
// Thread-safety: a Tokenizer is immutable after construction; encode/decode may run
// concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nanochat::gguf {
class GgufFile;
class GgufWriter;
}  // namespace nanochat::gguf

namespace nanochat::model {

using TokenId = std::int32_t;

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : std::int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  enum class Kind { kBpe, kSpm };

  // Reads tokenizer.ggml.*; throws FormatError naming the file and key when something is
  // missing or inconsistent, or the pre-tokenizer is one nanochat does not know.
  static Tokenizer from_gguf(const gguf::GgufFile& file);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // add_special: BOS (and EOS) as the model's add_bos_token/add_eos_token ask.
  // parse_special: also split out control tokens written in the text (e.g. "<|endoftext|>").
  std::vector<TokenId> encode(std::string_view text, bool add_special = false,
                              bool parse_special = false) const;
  // The text of a sequence of tokens; control tokens are omitted unless `special`.
  std::string decode(std::span<const TokenId> ids, bool special = false) const;
  // The bytes one token stands for (for streaming output).
  std::string piece(TokenId id, bool special = false) const;

  Kind kind() const;
  const std::string& pre() const;
  std::size_t size() const;
  std::optional<TokenId> bos() const;
  std::optional<TokenId> eos() const;
  bool add_bos() const;
  const std::string& token_text(TokenId id) const;
  TokenType token_type(TokenId id) const;
  std::optional<TokenId> find(std::string_view text) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Copies every tokenizer.* key of `from` into `to` (a file that carries another file's
// tokenizer). Returns how many keys were copied: 0 when `from` has no tokenizer.
std::size_t copy_tokenizer_metadata(const gguf::GgufFile& from, gguf::GgufWriter& to);

}  // namespace nanochat::model
