#include "nanochat/model/bpe_trainer.hpp"

#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/byte_level.hpp"
#include "nanochat/util/error.hpp"
#include "pretokenize.hpp"

namespace nanochat::model {
namespace {

constexpr const char* kLlama3Pattern =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

using Pair = std::uint64_t;
Pair make_pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
         static_cast<std::uint32_t>(b);
}
std::int32_t first_of(Pair p) { return static_cast<std::int32_t>(p >> 32); }
std::int32_t second_of(Pair p) { return static_cast<std::int32_t>(p & 0xffffffffu); }

struct HeapEntry {
  std::uint64_t count;
  Pair pair;
  bool operator<(const HeapEntry& o) const {  // top: most frequent, then smallest pair key
    return count < o.count || (count == o.count && pair > o.pair);
  }
};

}  // namespace

struct BpeTrainer::State {
  RegexSplitter splitter{std::vector<std::string>{kLlama3Pattern}};
  std::unordered_map<std::string, std::uint64_t> word_counts;  // raw bytes of each word
};

BpeTrainer::BpeTrainer(BpeTrainOptions options)
    : options_(std::move(options)), state_(std::make_unique<State>()) {
  const std::size_t floor = 256 + options_.special_tokens.size();
  if (options_.vocab_size < floor) {
    fail<UsageError>("--vocab-size {}: must be at least {} (256 byte tokens + {} special tokens)",
                     options_.vocab_size, floor, options_.special_tokens.size());
  }
}

BpeTrainer::~BpeTrainer() = default;

std::size_t BpeTrainer::distinct_words() const { return state_->word_counts.size(); }

void BpeTrainer::add_text(std::string_view text) {
  bytes_ += text.size();
  for (const auto& [offset, length] : state_->splitter.split(text)) {
    ++state_->word_counts[std::string(text.substr(offset, length))];
  }
}

BpeVocab BpeTrainer::train(const std::function<void(std::size_t, std::size_t)>& progress) {
  // Words in a deterministic order (the hash map's order is not).
  std::vector<std::pair<std::string, std::uint64_t>> sorted(state_->word_counts.begin(),
                                                            state_->word_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<std::int32_t>> words;
  std::vector<std::uint64_t> counts;
  words.reserve(sorted.size());
  for (const auto& [w, c] : sorted) {
    std::vector<std::int32_t> syms;
    syms.reserve(w.size());
    for (unsigned char ch : w) syms.push_back(ch);
    words.push_back(std::move(syms));
    counts.push_back(c);
  }
  sorted.clear();

  std::unordered_map<Pair, std::uint64_t> pair_counts;
  std::unordered_map<Pair, std::unordered_set<std::uint32_t>> where;
  for (std::uint32_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w];
    for (std::size_t i = 1; i < s.size(); ++i) {
      const Pair p = make_pair_key(s[i - 1], s[i]);
      pair_counts[p] += counts[w];
      where[p].insert(w);
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [p, c] : pair_counts) heap.push({c, p});

  const auto& chars = byte_level_chars();
  BpeVocab vocab;
  for (int b = 0; b < 256; ++b) {
    vocab.tokens.push_back(chars[static_cast<std::size_t>(b)]);
    vocab.types.push_back(1);
  }
  const std::size_t tokens_wanted = options_.vocab_size - options_.special_tokens.size();
  std::unordered_map<std::string, std::int32_t> ids;
  for (std::int32_t i = 0; i < 256; ++i) ids.emplace(vocab.tokens[static_cast<std::size_t>(i)], i);

  while (vocab.tokens.size() < tokens_wanted && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    const auto it = pair_counts.find(top.pair);
    if (it == pair_counts.end() || it->second != top.count) continue;  // stale entry
    if (top.count < options_.min_pair_count) break;
    const std::int32_t a = first_of(top.pair), b = second_of(top.pair);
    std::string text =
        vocab.tokens[static_cast<std::size_t>(a)] + vocab.tokens[static_cast<std::size_t>(b)];
    vocab.merges.push_back(vocab.tokens[static_cast<std::size_t>(a)] + " " +
                           vocab.tokens[static_cast<std::size_t>(b)]);
    // Two merge paths can build the same string: the merge is kept (encoding applies merges to
    // strings) but the vocabulary holds the string once.
    auto [slot, added] = ids.emplace(text, static_cast<std::int32_t>(vocab.tokens.size()));
    const std::int32_t new_id = slot->second;
    if (added) {
      vocab.tokens.push_back(std::move(text));
      vocab.types.push_back(1);
    }

    std::unordered_map<Pair, std::int64_t> delta;
    const std::unordered_set<std::uint32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    for (std::uint32_t w : affected) {
      auto& s = words[w];
      const auto c = static_cast<std::int64_t>(counts[w]);
      std::vector<std::int32_t> merged;
      merged.reserve(s.size());
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          merged.push_back(new_id);
          ++i;
        } else {
          merged.push_back(s[i]);
        }
      }
      if (merged.size() == s.size()) continue;
      for (std::size_t i = 1; i < s.size(); ++i) delta[make_pair_key(s[i - 1], s[i])] -= c;
      for (std::size_t i = 1; i < merged.size(); ++i) {
        const Pair p = make_pair_key(merged[i - 1], merged[i]);
        delta[p] += c;
        where[p].insert(w);
      }
      s = std::move(merged);
    }
    for (const auto& [p, d] : delta) {
      if (d == 0) continue;
      auto& count = pair_counts[p];
      count = static_cast<std::uint64_t>(static_cast<std::int64_t>(count) + d);
      if (count == 0) {
        pair_counts.erase(p);
      } else {
        heap.push({count, p});
      }
    }
    if (progress && (vocab.merges.size() % 256 == 0 || vocab.tokens.size() == tokens_wanted)) {
      progress(vocab.tokens.size(), tokens_wanted);
    }
  }
  for (const std::string& special : options_.special_tokens) {
    vocab.tokens.push_back(special);
    vocab.types.push_back(3);
  }
  const auto special_base =
      static_cast<std::int32_t>(vocab.tokens.size() - options_.special_tokens.size());
  if (!options_.special_tokens.empty()) vocab.bos = special_base;
  if (options_.special_tokens.size() > 1) vocab.eos = special_base + 1;
  if (options_.special_tokens.size() > 2) vocab.pad = special_base + 2;
  return vocab;
}

void write_tokenizer_metadata(gguf::GgufWriter& w, const BpeVocab& vocab,
                              bool architecture_header) {
  using gguf::Value;
  using gguf::ValueType;
  if (architecture_header) {
    // What llama.cpp's own vocab-only files carry, so that it loads this file with vocab_only.
    w.set("general.architecture", Value("llama"));
    w.set("general.name", Value("nanochat-bpe"));
    w.set("llama.context_length", Value(std::uint32_t{4096}));
    w.set("llama.embedding_length", Value(std::uint32_t{64}));
    w.set("llama.block_count", Value(std::uint32_t{1}));
    w.set("llama.feed_forward_length", Value(std::uint32_t{128}));
    w.set("llama.rope.dimension_count", Value(std::uint32_t{16}));
    w.set("llama.attention.head_count", Value(std::uint32_t{4}));
    w.set("llama.attention.head_count_kv", Value(std::uint32_t{4}));
    w.set("llama.attention.layer_norm_rms_epsilon", Value(1e-5f));
    w.set("llama.vocab_size", Value(static_cast<std::uint32_t>(vocab.tokens.size())));
  }
  w.set("tokenizer.ggml.model", Value("gpt2"));
  w.set("tokenizer.ggml.pre", Value("llama-bpe"));
  w.set("tokenizer.ggml.tokens", gguf::string_array(vocab.tokens));
  w.set("tokenizer.ggml.token_type",
        gguf::numeric_array<std::int32_t>(ValueType::kInt32, vocab.types));
  w.set("tokenizer.ggml.merges", gguf::string_array(vocab.merges));
  if (vocab.bos >= 0)
    w.set("tokenizer.ggml.bos_token_id", Value(static_cast<std::uint32_t>(vocab.bos)));
  if (vocab.eos >= 0)
    w.set("tokenizer.ggml.eos_token_id", Value(static_cast<std::uint32_t>(vocab.eos)));
  if (vocab.pad >= 0) {
    w.set("tokenizer.ggml.padding_token_id", Value(static_cast<std::uint32_t>(vocab.pad)));
  }
  w.set("tokenizer.ggml.add_bos_token", Value(false));
  w.set("tokenizer.ggml.add_eos_token", Value(false));
}

}  // namespace nanochat::model
