// RapidCheck: tokenizers round-trip arbitrary text and only produce ids in the vocabulary.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <map>
#include <string>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"

namespace nanochat::model {
namespace {

const Tokenizer& vocab(const char* name) {
  static std::map<std::string, std::pair<gguf::GgufFile, Tokenizer>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    auto file =
        gguf::GgufFile::open(std::string(NANOCHAT_SHARED_DIR) + "/testdata/tokenizers/" + name);
    auto tok = Tokenizer::from_gguf(file);
    it = cache.emplace(name, std::make_pair(std::move(file), std::move(tok))).first;
  }
  return it->second.second;
}

// Text drawn from pieces that exercise the pre-tokenizers: letters, digits, spaces, newlines,
// punctuation, accents, CJK, emoji, contractions. (Not U+2581 "▁": SentencePiece vocabularies use
// it for the space, so it cannot round-trip there — in llama.cpp or anywhere else.)
rc::Gen<std::string> gen_text() {
  return rc::gen::map(rc::gen::container<std::vector<std::string>>(rc::gen::element<std::string>(
                          "a", "Z", "the", " ", "  ", "\n", "\t", "1", "234", "'s", "'LL", ".",
                          "!?", "(", "{}", "\xc3\xa9", "\xe4\xb8\xad\xe6\x96\x87",
                          "\xf0\x9f\x98\x80", "_", "-", "\xc2\xa0", "0x1F")),
                      [](const std::vector<std::string>& parts) {
                        std::string s;
                        for (const auto& p : parts) s += p;
                        return s;
                      });
}

RC_GTEST_PROP(TokenizerProps, ByteLevelBpeRoundTripsAnyBytes, (const std::string& bytes)) {
  const Tokenizer& tok = vocab("ggml-vocab-gpt-2.gguf");
  RC_ASSERT(tok.decode(tok.encode(bytes)) == bytes);
}

RC_GTEST_PROP(TokenizerProps, EveryVocabularyRoundTripsText, ()) {
  const std::string text = *gen_text();
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-starcoder.gguf",
                           "ggml-vocab-refact.gguf", "ggml-vocab-llama-spm.gguf"}) {
    const Tokenizer& tok = vocab(name);
    const auto ids = tok.encode(text);
    for (auto id : ids) RC_ASSERT(id >= 0 && static_cast<std::size_t>(id) < tok.size());
    RC_ASSERT(tok.decode(ids) == text);
  }
}

}  // namespace
}  // namespace nanochat::model
