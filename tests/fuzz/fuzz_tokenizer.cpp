// libFuzzer target for the tokenizers: any bytes encode without crashing, every id is in the
// vocabulary, and byte-level BPE (GPT-2's vocabulary) decodes back to exactly the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"

using namespace nanochat;

namespace {
struct Vocabs {
  gguf::GgufFile bpe_file =
      gguf::GgufFile::open(NANOCHAT_SHARED_DIR "/testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  gguf::GgufFile spm_file =
      gguf::GgufFile::open(NANOCHAT_SHARED_DIR "/testdata/tokenizers/ggml-vocab-llama-spm.gguf");
  gguf::GgufFile coder_file = gguf::GgufFile::open(
      NANOCHAT_SHARED_DIR "/testdata/tokenizers/ggml-vocab-deepseek-coder.gguf");
  model::Tokenizer bpe = model::Tokenizer::from_gguf(bpe_file);
  model::Tokenizer spm = model::Tokenizer::from_gguf(spm_file);
  model::Tokenizer coder = model::Tokenizer::from_gguf(coder_file);
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Vocabs v;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const model::Tokenizer* tok : {&v.bpe, &v.spm, &v.coder}) {
    for (bool special : {false, true}) {
      const auto ids = tok->encode(text, special, special);
      for (auto id : ids) {
        if (id < 0 || static_cast<std::size_t>(id) >= tok->size()) std::abort();
      }
      if (tok == &v.bpe && !special && tok->decode(ids) != text) std::abort();
    }
  }
  return 0;
}
