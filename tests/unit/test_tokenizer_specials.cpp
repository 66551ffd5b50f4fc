// Special-looking text against llama.cpp's own ids (tests/data/llama-tokenize/specials.jsonl,
// from llama-tokenize): control-looking markers whatever their type in the file, phi-3's
// whitespace-swallowing special tokens, with and without special-token parsing.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"

namespace nanochat::model {
namespace {

TEST(TokenizerSpecials, EqualLlamaCppsIds) {
  std::ifstream in(std::string(NANOCHAT_TEST_DATA) + "/llama-tokenize/specials.jsonl");
  ASSERT_TRUE(in.good());
  std::map<std::string, std::unique_ptr<Tokenizer>> vocabs;
  std::string line;
  int rows = 0;
  while (std::getline(in, line)) {
    const auto row = nlohmann::json::parse(line);
    const std::string vocab = row.at("vocab");
    auto& tok = vocabs[vocab];
    if (!tok) {
      const auto file =
          gguf::GgufFile::open(std::string(NANOCHAT_SHARED_DIR) + "/testdata/tokenizers/" + vocab,
                               gguf::ReadOptions{true});
      tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(file));
    }
    const std::string text = row.at("text");
    const bool special = row.at("special");
    const std::vector<TokenId> want = row.at("ids").get<std::vector<TokenId>>();
    EXPECT_EQ(tok->encode(text, false, special), want)
        << vocab << " '" << text << "'" << (special ? " (special)" : "");
    ++rows;
  }
  EXPECT_EQ(rows, 180);
}

}  // namespace
}  // namespace nanochat::model
