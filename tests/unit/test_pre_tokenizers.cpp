// Every tokenizer.ggml.pre value llama.cpp accepts, against llama.cpp's own ids
// (tests/data/llama-tokenize/pre/: a small BPE vocabulary written once per name, and the texts
// tokenized by libllama, see its README): code in several languages, emoji, CJK, combining marks,
// right-to-left scripts, odd whitespace.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "model/pre_tokenizers.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

const std::string kDir = std::string(NANOCHAT_TEST_DATA) + "/llama-tokenize/pre/";

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The vocabulary with tokenizer.ggml.pre set to `name`, as tools/tokenizer/make_pre_vectors.py
// writes it: the key is followed by its type (8, string), a uint64 length and the bytes.
std::vector<std::uint8_t> with_pre(const std::vector<std::uint8_t>& gguf, const std::string& name) {
  const std::string key = "tokenizer.ggml.pre";
  std::string needle(8, '\0');
  const std::uint64_t key_len = key.size();
  std::memcpy(needle.data(), &key_len, 8);
  needle += key;
  const std::string bytes(gguf.begin(), gguf.end());
  const std::size_t at = bytes.find(needle) + needle.size();
  std::uint64_t old_len = 0;
  std::memcpy(&old_len, bytes.data() + at + 4, 8);
  std::string out = bytes.substr(0, at + 4);
  const std::uint64_t len = name.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += name;
  out += bytes.substr(at + 12 + old_len);
  return {out.begin(), out.end()};
}

Tokenizer load(const std::vector<std::uint8_t>& vocab, const std::string& name) {
  const auto bytes = with_pre(vocab, name);
  const auto file = gguf::GgufFile::parse(bytes, name + ".gguf", gguf::ReadOptions{true});
  return Tokenizer::from_gguf(file);
}

TEST(PreTokenizers, EqualLlamaCppsIdsForEveryName) {
  const auto vocab = read_bytes(kDir + "vocab.gguf");
  ASSERT_FALSE(vocab.empty());
  std::ifstream texts_in(kDir + "texts.json");
  const auto texts = nlohmann::json::parse(texts_in).get<std::vector<std::string>>();
  std::ifstream in(kDir + "pre.jsonl");
  ASSERT_TRUE(in.good());
  std::set<std::string> in_vectors;
  std::size_t vectors = 0, refused = 0;
  std::string line;
  while (std::getline(in, line)) {
    const auto row = nlohmann::json::parse(line);
    for (const std::string name : row.at("pre")) {
      in_vectors.insert(name);
      std::string why;
      const bool supported = find_pre_tokenizer(name, &why) != nullptr;
      const auto& names = pre_tokenizer_names();
      const bool listed = std::any_of(names.begin(), names.end(),
                                      [&](const PreTokenizerName& n) { return n.name == name; });
      // A name libllama tokenizes with is in the table; one it refuses may be too (`whitespace`,
      // which it cannot run on a byte-level vocabulary), as one nanochat refuses as well.
      EXPECT_TRUE(listed || !row.contains("ids")) << name << " is missing from the table";
      if (!row.contains("ids")) {  // llama.cpp refuses the name: so does nanochat
        EXPECT_FALSE(supported) << name;
        EXPECT_THROW(load(vocab, name), FormatError) << name;
        continue;
      }
      if (!supported) {  // a name nanochat knows it cannot run: one clear error
        try {
          load(vocab, name);
          ADD_FAILURE() << name << " loads";
        } catch (const FormatError& e) {
          EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.pre is '" + name + "'"),
                    std::string::npos)
              << e.what();
        }
        ++refused;
        continue;
      }
      const Tokenizer tok = load(vocab, name);
      const auto& ids = row.at("ids");
      ASSERT_EQ(ids.size(), texts.size());
      for (std::size_t i = 0; i < texts.size(); ++i) {
        EXPECT_EQ(tok.encode(texts[i], true, true), ids[i].get<std::vector<TokenId>>())
            << name << ", text " << i << ": '" << texts[i] << "'";
        ++vectors;
      }
    }
  }
  // The table and the vectors name the same pre-tokenizers.
  for (const PreTokenizerName& n : pre_tokenizer_names()) {
    EXPECT_TRUE(in_vectors.count(std::string(n.name)) == 1) << n.name << " has no vectors";
  }
  EXPECT_EQ(vectors, 7128u);  // 88 names, 81 texts
  EXPECT_EQ(refused, 4u);     // SentencePiece-style BPE over raw UTF-8
}

// llama.cpp's departures from the Unicode categories that change where words end.
TEST(PreTokenizers, FollowLlamaCpp) {
  const auto vocab = read_bytes(kDir + "vocab.gguf");
  // deepseek-llm: Devanagari is not among its letter ranges; the CJK range U+0800-U+4E00 takes
  // the word whole, marks included.
  const Tokenizer ds = load(vocab, "deepseek-llm");
  const Tokenizer ds_coder = load(vocab, "deepseek-coder");
  EXPECT_NE(ds.encode("नमस्ते", false), ds_coder.encode("नमस्ते", false));
  // An unknown name is one error naming the file, the key and the value.
  try {
    load(vocab, "no-such-pre");
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-pre.gguf: tokenizer.ggml.pre is 'no-such-pre'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace nanochat::model
