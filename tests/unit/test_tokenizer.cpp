// Tokenizers against llama.cpp's expected token ids for every vocabulary in
// ../shared/testdata/tokenizers (.inp / .out pairs), plus decoding round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::model {
namespace {

namespace fs = std::filesystem;

const fs::path kDir = fs::path(NANOCHAT_SHARED_DIR) / "testdata" / "tokenizers";

std::vector<std::string> read_inputs(const fs::path& path) {
  const std::string text = read_file(path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t hit; (hit = text.find(sep, start)) != std::string::npos;
       start = hit + sep.size()) {
    out.push_back(text.substr(start, hit - start));
  }
  return out;
}

std::vector<std::vector<TokenId>> read_outputs(const fs::path& path) {
  std::istringstream in(read_file(path));
  std::vector<std::vector<TokenId>> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ids(line);
    std::vector<TokenId> row;
    for (long id; ids >> id;) row.push_back(static_cast<TokenId>(id));
    out.push_back(row);
  }
  return out;
}

class VocabTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VocabTest, EncodesExactlyAsLlamaCpp) {
  const fs::path gguf_path = kDir / (GetParam() + ".gguf");
  ASSERT_TRUE(fs::exists(gguf_path)) << gguf_path;
  const auto file = gguf::GgufFile::open(gguf_path);
  const Tokenizer tok = Tokenizer::from_gguf(file);
  const auto inputs = read_inputs(kDir / (GetParam() + ".gguf.inp"));
  const auto outputs = read_outputs(kDir / (GetParam() + ".gguf.out"));
  ASSERT_EQ(inputs.size(), outputs.size());
  ASSERT_EQ(inputs.size(), 46u);
  int mismatches = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto got = tok.encode(inputs[i]);
    if (got != outputs[i]) {
      ++mismatches;
      std::string g, w;
      for (auto id : got) g += " " + std::to_string(id);
      for (auto id : outputs[i]) w += " " + std::to_string(id);
      ADD_FAILURE() << GetParam() << " test " << i << " '" << inputs[i].substr(0, 60)
                    << "'\n  got:     " << g.substr(0, 300) << "\n  expected:" << w.substr(0, 300);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_P(VocabTest, DecodingRoundTrips) {
  const auto file = gguf::GgufFile::open(kDir / (GetParam() + ".gguf"));
  const Tokenizer tok = Tokenizer::from_gguf(file);
  for (const std::string& text : read_inputs(kDir / (GetParam() + ".gguf.inp"))) {
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(SharedVocabs, VocabTest,
                         ::testing::Values("ggml-vocab-gpt-2", "ggml-vocab-starcoder",
                                           "ggml-vocab-deepseek-coder", "ggml-vocab-refact",
                                           "ggml-vocab-llama-spm", "ggml-vocab-phi-3"),
                         [](const auto& p) {
                           std::string name = p.param.substr(11);
                           for (char& c : name) c = (c == '-') ? '_' : c;
                           return name;
                         });

// A tokenizer's arrays with the right count and the wrong element type (what crashed
// Tokenizer::from_gguf and SentencePiece encoding), and values out of range: each an error
// naming the file and key.
TEST(Tokenizer, MetadataOfTheWrongTypeNamesTheKey) {
  for (const char* vocab : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"}) {
    const auto base = gguf::GgufFile::open(kDir / vocab);
    const std::size_t n = base.get_string_array("tokenizer.ggml.tokens")->size();
    auto expect_error = [&](const std::string& key, gguf::Value value, const std::string& want) {
      gguf::GgufWriter w;
      for (const auto& [k, v] : base.metadata()) w.set(k, v);
      w.set(key, std::move(value));
      const auto bytes = w.bytes();
      const auto file = gguf::GgufFile::parse(bytes, "hostile.gguf");
      try {
        (void)Tokenizer::from_gguf(file);
        ADD_FAILURE() << vocab << ": " << key << " accepted";
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("hostile.gguf: "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      }
    };
    const std::vector<std::string> strings(n, "1");
    gguf::Array nested;
    nested.type = gguf::ValueType::kArray;
    nested.arrays.assign(n, gguf::numeric_array<float>(gguf::ValueType::kFloat32, {0.0f}));
    const gguf::Value nested_value(nested);
    for (const char* key : {"tokenizer.ggml.token_type", "tokenizer.ggml.scores"}) {
      expect_error(key, gguf::string_array(strings), std::string(key) + "' is an array of string");
      expect_error(key, nested_value, std::string(key) + "' is an array of array");
    }
    expect_error(
        "tokenizer.ggml.tokens",
        gguf::numeric_array<std::int32_t>(gguf::ValueType::kInt32, std::vector<std::int32_t>(n, 1)),
        "'tokenizer.ggml.tokens' is an array of int32, expected an array of strings");
    expect_error(
        "tokenizer.ggml.token_type",
        gguf::numeric_array<std::int32_t>(gguf::ValueType::kInt32, std::vector<std::int32_t>(n, 9)),
        "tokenizer.ggml.token_type of token 0 is 9");
    expect_error(
        "tokenizer.ggml.scores",
        gguf::numeric_array<float>(gguf::ValueType::kFloat32, std::vector<float>(n, std::nanf(""))),
        "tokenizer.ggml.scores of token 0 is NaN");
    expect_error("tokenizer.ggml.scores",
                 gguf::numeric_array<float>(gguf::ValueType::kFloat32, {0.0f}),
                 "tokenizer.ggml.scores has 1 entries");
    expect_error("tokenizer.ggml.bos_token_id", gguf::Value(std::int64_t{-1}),
                 "tokenizer.ggml.bos_token_id = -1 is outside the vocabulary");
  }
  const auto gpt2 = gguf::GgufFile::open(kDir / "ggml-vocab-gpt-2.gguf");
  gguf::GgufWriter w;
  for (const auto& [k, v] : gpt2.metadata()) w.set(k, v);
  w.set("tokenizer.ggml.merges",
        gguf::numeric_array<std::int32_t>(gguf::ValueType::kInt32, {1, 2, 3}));
  const auto bytes = w.bytes();
  try {
    (void)Tokenizer::from_gguf(gguf::GgufFile::parse(bytes, "merges.gguf"));
    ADD_FAILURE() << "int merges accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'tokenizer.ggml.merges' is an array of int32"),
              std::string::npos)
        << e.what();
  }
}

TEST(Tokenizer, SpecialTokensAndBos) {
  const auto file = gguf::GgufFile::open(kDir / "ggml-vocab-gpt-2.gguf");
  const Tokenizer tok = Tokenizer::from_gguf(file);
  const auto plain = tok.encode("a<|endoftext|>b");
  const auto special = tok.encode("a<|endoftext|>b", false, true);
  EXPECT_GT(plain.size(), 3u);
  ASSERT_EQ(special.size(), 3u);
  EXPECT_EQ(special[1], 50256);
  const auto spm_file = gguf::GgufFile::open(kDir / "ggml-vocab-llama-spm.gguf");
  const Tokenizer spm = Tokenizer::from_gguf(spm_file);
  const auto with_bos = spm.encode("Hello", true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_TRUE(spm.encode("", false).empty());
}

}  // namespace
}  // namespace nanochat::model

// ---- BPE trainer ----
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/bpe_trainer.hpp"

namespace nanochat::model {
namespace {

std::vector<std::uint8_t> train_bytes(const std::string& corpus, std::size_t vocab_size) {
  BpeTrainOptions o;
  o.vocab_size = vocab_size;
  BpeTrainer trainer(o);
  trainer.add_text(corpus);
  const BpeVocab vocab = trainer.train();
  gguf::GgufWriter w;
  write_tokenizer_metadata(w, vocab, true);
  return w.bytes();
}

std::string sample_corpus() {
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text += "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, " +
            std::to_string(i) + "))\n";
  }
  return text;
}

TEST(BpeTrainer, TrainsAVocabularyTheTokenizerLoads) {
  const auto bytes = train_bytes(sample_corpus(), 300);
  const auto file = gguf::GgufFile::parse(bytes, "trained.gguf");
  EXPECT_EQ(file.get_string("tokenizer.ggml.pre"), "llama-bpe");
  const Tokenizer tok = Tokenizer::from_gguf(file);
  EXPECT_EQ(tok.size(), 300u);
  EXPECT_EQ(tok.token_text(*tok.bos()), "<|bos|>");
  EXPECT_EQ(tok.token_type(*tok.eos()), TokenType::kControl);
  // Frequent words became single tokens; the text round-trips; unseen bytes still encode.
  EXPECT_EQ(tok.encode(" return").size(), 1u) << "a frequent word is one token";
  const std::string corpus = sample_corpus();
  const auto ids = tok.encode(corpus);
  EXPECT_LT(ids.size(), corpus.size() / 2);
  EXPECT_EQ(tok.decode(ids), corpus);
  const std::string unseen = "Zürich \xf0\x9f\x98\x80 {}[]";
  EXPECT_EQ(tok.decode(tok.encode(unseen)), unseen);
  const auto with_special = tok.encode("x<|eos|>", false, true);
  EXPECT_EQ(with_special.back(), *tok.eos());
}

TEST(BpeTrainer, IsDeterministic) {
  EXPECT_EQ(train_bytes(sample_corpus(), 280), train_bytes(sample_corpus(), 280));
}

TEST(BpeTrainer, StopsWhenPairsRunOut) {
  BpeTrainOptions o;
  o.vocab_size = 5000;
  BpeTrainer trainer(o);
  trainer.add_text("abababab");
  const BpeVocab vocab = trainer.train();
  EXPECT_LT(vocab.tokens.size(), 5000u);
  EXPECT_EQ(vocab.tokens.size(), 256 + vocab.merges.size() + 3);
}

TEST(BpeTrainer, RejectsTooSmallVocabulary) {
  BpeTrainOptions o;
  o.vocab_size = 100;
  EXPECT_THROW(BpeTrainer{o}, UsageError);
}

}  // namespace
}  // namespace nanochat::model
