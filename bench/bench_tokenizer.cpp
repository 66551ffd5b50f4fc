// Tokenizer encoding throughput (MB/s of input text) on held-out English text and on code,
// against two references measured in the same run:
//  - pretokenize: the regular-expression split alone, a floor no BPE encoder can beat;
//  - naive_bpe: a plain BPE encoder that rescans every pair of a word for the best merge after
//    each merge (quadratic per word), as a straightforward implementation would.
// Usage: bench_tokenizer [--benchmark_repetitions=5 ...]
#include <benchmark/benchmark.h>

#include <climits>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/pretokenize.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/tokenizer.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::model {
namespace {

const std::string kShared = NANOCHAT_SHARED_DIR;
const std::string kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

const std::string& text_of(const std::string& which) {
  static const std::string english = read_file(kShared + "/testdata/text/wikitext-2-valid.txt");
  static const std::string code = [] {
    // nanochat's own sources as a code corpus.
    std::string all;
    for (const char* f : {"/src/kernels/autotune.cpp", "/src/gguf/reader.cpp",
                          "/src/model/tokenizer.cpp", "/src/cli/benchmark_kernels.cpp"}) {
      all += read_file(std::string(NANOCHAT_SOURCE_DIR) + f);
    }
    return all;
  }();
  return which == "english" ? english : code;
}

struct Gpt2 {
  gguf::GgufFile file =
      gguf::GgufFile::open(kShared + "/testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  Tokenizer tok = Tokenizer::from_gguf(file);
};
const Gpt2& gpt2() {
  static const Gpt2 g;
  return g;
}

void BM_Encode(benchmark::State& state, const char* vocab, const char* which) {
  const auto file = gguf::GgufFile::open(kShared + "/testdata/tokenizers/" + vocab);
  const Tokenizer tok = Tokenizer::from_gguf(file);
  const std::string& text = text_of(which);
  std::size_t tokens = 0;
  for (auto _ : state) {
    const auto ids = tok.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
  state.counters["bytes/token"] = static_cast<double>(text.size()) / static_cast<double>(tokens);
}

void BM_PreTokenizeOnly(benchmark::State& state, const char* which) {
  const RegexSplitter splitter({kGpt2Pattern});
  const std::string& text = text_of(which);
  for (auto _ : state) {
    const auto parts = splitter.split(text);
    benchmark::DoNotOptimize(parts.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}

// GPT-2's byte -> character map, written out here so the baseline shares no code with the
// tokenizer it is compared with.
std::vector<std::string> byte_chars() {
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : next++;
    out[static_cast<std::size_t>(b)] = cp < 0x80
                                           ? std::string(1, static_cast<char>(cp))
                                           : std::string{static_cast<char>(0xc0 | (cp >> 6)),
                                                         static_cast<char>(0x80 | (cp & 0x3f))};
  }
  return out;
}

// The baseline: same vocabulary and pre-tokenization, quadratic merge search per word.
void BM_NaiveBpe(benchmark::State& state, const char* which) {
  const Gpt2& g = gpt2();
  std::unordered_map<std::string, int> rank;
  const auto* merges = g.file.get_array("tokenizer.ggml.merges");
  for (std::size_t i = 0; i < merges->size(); ++i)
    rank.emplace(merges->strings[i], static_cast<int>(i));
  const std::vector<std::string> chars = byte_chars();
  const RegexSplitter splitter({kGpt2Pattern});
  const std::string& text = text_of(which);
  std::size_t checked = 0;
  for (auto _ : state) {
    std::vector<TokenId> out;
    for (const auto& [off, len] : splitter.split(text)) {
      std::vector<std::string> parts;
      for (std::size_t i = 0; i < len; ++i)
        parts.push_back(chars[static_cast<unsigned char>(text[off + i])]);
      for (;;) {
        int best = INT_MAX;
        std::size_t at = 0;
        for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
          const auto it = rank.find(parts[i] + " " + parts[i + 1]);
          if (it != rank.end() && it->second < best) {
            best = it->second;
            at = i;
          }
        }
        if (best == INT_MAX) break;
        parts[at] += parts[at + 1];
        parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
      }
      for (const auto& p : parts) out.push_back(*g.tok.find(p));
    }
    benchmark::DoNotOptimize(out.data());
    if (checked++ == 0 && out != g.tok.encode(text)) state.SkipWithError("baseline disagrees");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}

BENCHMARK_CAPTURE(BM_Encode, gpt2_english, "ggml-vocab-gpt-2.gguf", "english")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, gpt2_code, "ggml-vocab-gpt-2.gguf", "code")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, deepseek_coder_code, "ggml-vocab-deepseek-coder.gguf", "code")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, llama_spm_english, "ggml-vocab-llama-spm.gguf", "english")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PreTokenizeOnly, english, "english")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_NaiveBpe, gpt2_english, "english")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_NaiveBpe, gpt2_code, "code")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace nanochat::model

BENCHMARK_MAIN();
