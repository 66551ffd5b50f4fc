// Internal to src/model: every `tokenizer.ggml.pre` value llama.cpp's vocabulary loader accepts
// for byte-level BPE vocabularies, with its expressions and the loader's per-name settings. One
// table: the tokenizer, its error message's list of names and the tests all read it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace nanochat::model {

struct PreTokenizer {
  std::vector<std::string> patterns;  // llama.cpp's expressions, applied in order
  bool ignore_merges = false;         // a word that is a token is taken whole (llama3, tekken)
  bool add_bos = false;  // BOS by default when the file has no tokenizer.ggml.add_bos_token
};

struct PreTokenizerName {
  std::string_view name;   // the value of tokenizer.ggml.pre
  std::string_view group;  // the PreTokenizer it selects; empty: not supported
  std::string_view why;    // for an unsupported name: what nanochat lacks
};

// Every name llama.cpp accepts, in llama.cpp's order.
const std::vector<PreTokenizerName>& pre_tokenizer_names();

// The pre-tokenizer for `name` ("" is a file without the key: llama.cpp's default), or nullptr
// for a name llama.cpp does not accept or nanochat does not support (`*why` says which).
const PreTokenizer* find_pre_tokenizer(std::string_view name, std::string* why = nullptr);

// "default, llama3, ...": the names find_pre_tokenizer accepts, for error messages.
std::string supported_pre_tokenizers();

}  // namespace nanochat::model
