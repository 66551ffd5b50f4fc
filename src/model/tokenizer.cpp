#include "nanochat/model/tokenizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <queue>
#include <unordered_map>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/gguf/writer.hpp"
#include "nanochat/model/byte_level.hpp"
#include "nanochat/util/error.hpp"
#include "pre_tokenizers.hpp"
#include "pretokenize.hpp"

namespace nanochat::model {
namespace {

// byte_level_chars() and its inverse.
struct ByteMap {
  const std::array<std::string, 256>& encode = byte_level_chars();
  std::unordered_map<std::uint32_t, std::uint8_t> decode;  // code point -> byte
  ByteMap() {
    for (int b = 0; b < 256; ++b) {
      const std::string& s = encode[static_cast<std::size_t>(b)];
      const std::uint32_t cp = s.size() == 1 ? static_cast<unsigned char>(s[0])
                                             : ((static_cast<unsigned char>(s[0]) & 0x1fu) << 6) |
                                                   (static_cast<unsigned char>(s[1]) & 0x3fu);
      decode[cp] = static_cast<std::uint8_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

// Lets unordered_maps keyed by std::string be searched with a string_view, without building a
// string per lookup.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>>;

struct Tokenizer::Impl {
  Kind kind = Kind::kBpe;
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<TokenType> types;
  std::vector<float> scores;
  TokenMap to_id;
  std::unordered_map<std::string, int> merge_rank;  // "left right" -> rank
  // The same merges over token ids: (left id << 32 | right id) -> (rank, merged id). Used when
  // every byte character and every merge result is a token — then it is equivalent to the
  // string form and avoids building strings in the inner loop.
  std::unordered_map<std::uint64_t, std::pair<int, TokenId>> id_merges;
  bool use_id_merges = false;
  TokenId byte_ids[256] = {};
  std::optional<RegexSplitter> splitter;
  bool ignore_merges = false;
  bool add_space_prefix = true;
  std::optional<TokenId> bos, eos, unk;
  bool add_bos = false;
  bool add_eos = false;
  std::vector<TokenId> special_by_length;  // control, user-defined and unknown tokens
  // Per token (empty: none): kLstrip / kRstrip drop the whitespace before / after a match of
  // the special token, as llama.cpp's per-model token attributes do (phi-3).
  std::vector<std::uint8_t> strip;
  static constexpr std::uint8_t kLstrip = 1, kRstrip = 2;
  TokenId byte_tokens[256] = {};  // SPM: <0xXX>

  std::optional<TokenId> lookup(std::string_view text) const {
    const auto it = to_id.find(text);
    if (it == to_id.end()) return std::nullopt;
    return it->second;
  }

  void encode_bpe(std::string_view text, std::vector<TokenId>& out) const;
  void bpe_word_strings(const std::string& word, std::vector<TokenId>& out) const;
  void bpe_word_ids(std::string_view raw, std::vector<TokenId>& out) const;
  void encode_spm(std::string_view text, std::vector<TokenId>& out) const;
};

namespace {

struct Symbol {
  std::size_t offset;
  std::size_t length;
  int prev;
  int next;
};

struct BpeBigram {
  int left, right, rank;
  std::string text;
  bool operator<(const BpeBigram& o) const {  // priority_queue: top = lowest rank, then leftmost
    return rank > o.rank || (rank == o.rank && left > o.left);
  }
};

struct SpmBigram {
  int left, right;
  float score;
  std::size_t size;
  bool operator<(const SpmBigram& o) const {  // top = highest score, then leftmost
    return score < o.score || (score == o.score && left > o.left);
  }
};

// The merge loop of llama.cpp's BPE and SentencePiece tokenizers: the symbols of a word form a
// linked list (`prev`, `next`: indices, -1 at the ends); candidate merges of neighbours wait in a
// priority queue (Bigram's operator<: best first, then leftmost). A popped candidate that no
// longer applies (`current` false: a side was merged since) is skipped; otherwise `merge` folds
// the right symbol into the left one, which takes over its link, and the new neighbour pairs
// become candidates. `candidate(left, right)` gives the Bigram for a pair, or nullopt when the
// pair does not merge.
template <typename Bigram, typename Sym, typename Candidate, typename Current, typename Merge>
void merge_symbols(std::vector<Sym>& symbols, Candidate candidate, Current current, Merge merge) {
  std::priority_queue<Bigram> queue;
  auto add_bigram = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    if (std::optional<Bigram> b = candidate(left, right)) queue.push(std::move(*b));
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) add_bigram(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Sym& l = symbols[static_cast<std::size_t>(b.left)];
    Sym& r = symbols[static_cast<std::size_t>(b.right)];
    if (!current(l, r, b)) continue;
    merge(l, r, b);
    l.next = r.next;
    if (r.next >= 0) symbols[static_cast<std::size_t>(r.next)].prev = b.left;
    add_bigram(l.prev, b.left);
    add_bigram(b.left, l.next);
  }
}

// Folds r into l for symbols that are byte ranges of the word.
void merge_ranges(Symbol& l, Symbol& r) {
  l.length += r.length;
  r.length = 0;
}

std::vector<Symbol> split_chars(std::string_view word) {
  std::vector<Symbol> symbols;
  std::size_t offset = 0;
  while (offset < word.size()) {
    const std::size_t len =
        std::min(word.size() - offset, utf8_len(static_cast<unsigned char>(word[offset])));
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({offset, len, index - 1, offset + len < word.size() ? index + 1 : -1});
    offset += len;
  }
  return symbols;
}

}  // namespace

void Tokenizer::Impl::encode_bpe(std::string_view text, std::vector<TokenId>& out) const {
  const ByteMap& bm = byte_map();
  // Words repeat: each distinct word of this call is encoded once.
  std::unordered_map<std::string_view, std::pair<std::size_t, std::size_t>> cache;
  for (const auto& [offset, length] : splitter->split(text)) {
    const std::string_view raw = text.substr(offset, length);
    if (auto hit = cache.find(raw); hit != cache.end()) {
      const auto [from, count] = hit->second;
      for (std::size_t i = 0; i < count; ++i) out.push_back(out[from + i]);
      continue;
    }
    const std::size_t from = out.size();
    if (use_id_merges && !ignore_merges) {  // the id form needs no byte characters
      bpe_word_ids(raw, out);
      cache.emplace(raw, std::make_pair(from, out.size() - from));
      continue;
    }
    std::string word;
    for (char c : raw) word += bm.encode[static_cast<unsigned char>(c)];
    if (ignore_merges) {
      if (auto id = lookup(word)) {
        out.push_back(*id);
        cache.emplace(raw, std::make_pair(from, std::size_t{1}));
        continue;
      }
    }
    if (use_id_merges) {
      bpe_word_ids(raw, out);
    } else {
      bpe_word_strings(word, out);
    }
    cache.emplace(raw, std::make_pair(from, out.size() - from));
  }
}

void Tokenizer::Impl::bpe_word_ids(std::string_view raw, std::vector<TokenId>& out) const {
  struct IdSymbol {
    TokenId id;
    int prev, next;
  };
  struct IdBigram {
    int rank, left, right;
    TokenId left_id, right_id, merged;
    bool operator<(const IdBigram& o) const {
      return rank > o.rank || (rank == o.rank && left > o.left);
    }
  };
  std::vector<IdSymbol> symbols;
  symbols.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const int index = static_cast<int>(i);
    symbols.push_back({byte_ids[static_cast<unsigned char>(raw[i])], index - 1,
                       i + 1 < raw.size() ? index + 1 : -1});
  }
  merge_symbols<IdBigram>(
      symbols,
      [&](int left, int right) -> std::optional<IdBigram> {
        const TokenId a = symbols[static_cast<std::size_t>(left)].id;
        const TokenId b = symbols[static_cast<std::size_t>(right)].id;
        const auto it =
            id_merges.find((static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
                           static_cast<std::uint32_t>(b));
        if (it == id_merges.end()) return std::nullopt;
        return IdBigram{it->second.first, left, right, a, b, it->second.second};
      },
      // Outdated when either side has been merged since (ids changed or the link moved).
      [](const IdSymbol& l, const IdSymbol& r, const IdBigram& b) {
        return l.id == b.left_id && r.id == b.right_id && l.next == b.right && r.id >= 0;
      },
      [](IdSymbol& l, IdSymbol& r, const IdBigram& b) {
        l.id = b.merged;
        r.id = -1;
      });
  for (const IdSymbol& s : symbols) {
    if (s.id >= 0) out.push_back(s.id);
  }
}

void Tokenizer::Impl::bpe_word_strings(const std::string& word, std::vector<TokenId>& out) const {
  std::vector<Symbol> symbols = split_chars(word);
  merge_symbols<BpeBigram>(
      symbols,
      [&](int left, int right) -> std::optional<BpeBigram> {
        const Symbol& l = symbols[static_cast<std::size_t>(left)];
        const Symbol& r = symbols[static_cast<std::size_t>(right)];
        std::string key = word.substr(l.offset, l.length);
        key += ' ';
        key.append(word, r.offset, r.length);
        const auto it = merge_rank.find(key);
        if (it == merge_rank.end()) return std::nullopt;
        return BpeBigram{left, right, it->second, word.substr(l.offset, l.length + r.length)};
      },
      [](const Symbol& l, const Symbol& r, const BpeBigram& b) {
        return l.length != 0 && r.length != 0 && l.length + r.length == b.text.size() &&
               l.next == b.right;
      },
      [](Symbol& l, Symbol& r, const BpeBigram&) { merge_ranges(l, r); });
  for (const Symbol& s : symbols) {
    if (s.length == 0) continue;
    const std::string_view piece(word.data() + s.offset, s.length);
    if (auto id = lookup(piece)) {
      out.push_back(*id);
      continue;
    }
    for (char c : piece) {  // as llama.cpp: any single byte that happens to be a token
      if (auto id = lookup(std::string_view(&c, 1))) out.push_back(*id);
    }
  }
}

void Tokenizer::Impl::encode_spm(std::string_view text, std::vector<TokenId>& out) const {
  std::vector<Symbol> symbols = split_chars(text);
  // Views into `text`, which outlives this call.
  std::unordered_map<std::string_view, std::pair<int, int>> rev_merge;
  merge_symbols<SpmBigram>(
      symbols,
      [&](int left, int right) -> std::optional<SpmBigram> {
        const Symbol& l = symbols[static_cast<std::size_t>(left)];
        const Symbol& r = symbols[static_cast<std::size_t>(right)];
        const std::string_view piece = text.substr(l.offset, l.length + r.length);
        const auto id = lookup(piece);
        if (!id) return std::nullopt;
        rev_merge.insert_or_assign(piece, std::make_pair(left, right));
        return SpmBigram{left, right, scores[static_cast<std::size_t>(*id)], piece.size()};
      },
      [](const Symbol& l, const Symbol& r, const SpmBigram& b) {
        return l.length != 0 && r.length != 0 && l.length + r.length == b.size;
      },
      [](Symbol& l, Symbol& r, const SpmBigram&) { merge_ranges(l, r); });
  // Pieces that are not tokens are split back along their merges, down to bytes.
  std::vector<std::pair<std::size_t, std::size_t>> stack;
  for (const Symbol& s : symbols) {
    if (s.length == 0) continue;
    stack.emplace_back(s.offset, s.length);
    while (!stack.empty()) {
      const auto [offset, length] = stack.back();
      stack.pop_back();
      const std::string_view piece = text.substr(offset, length);
      if (auto id = lookup(piece)) {
        out.push_back(*id);
        continue;
      }
      const auto it = rev_merge.find(piece);
      if (it == rev_merge.end()) {
        for (char c : piece) out.push_back(byte_tokens[static_cast<unsigned char>(c)]);
        continue;
      }
      const Symbol& left = symbols[static_cast<std::size_t>(it->second.first)];
      const Symbol& right = symbols[static_cast<std::size_t>(it->second.second)];
      // Right first: the stack is LIFO. Merged symbols keep their original offsets; lengths
      // come from the split point.
      const std::size_t left_len = right.offset - left.offset;
      stack.emplace_back(offset + left_len, length - left_len);
      stack.emplace_back(offset, left_len);
    }
  }
}

namespace {

// llama.cpp's vocabulary loader recognises end-of-turn, end-of-generation and fill-in-the-middle
// markers by their text and makes them control tokens whatever type the file gives them (it logs
// "control-looking token ... will be overridden"): a literal "</s>" in a prompt then stays text
// unless special tokens are parsed. nanochat follows it, so that ids agree. The lists are
// llama.cpp's (src/llama-vocab.cpp, build 11669 and later).
void mark_control_looking_tokens(const gguf::GgufFile& file, const TokenMap& to_id,
                                 std::vector<TokenType>& types) {
  static constexpr std::string_view kEndOfGeneration[] = {"<|eot_id|>",
                                                          "<|im_end|>",
                                                          "<|end|>",
                                                          "<|return|>",
                                                          "<|call|>",
                                                          "<|flush|>",
                                                          "<|calls|>",
                                                          "<end_of_turn>",
                                                          "<|endoftext|>",
                                                          "</s>",
                                                          "<|eom_id|>",
                                                          "<EOT>",
                                                          "_<EOT>",
                                                          "[EOT]",
                                                          "[EOS]",
                                                          "<|end_of_text|>",
                                                          "<end_of_utterance>",
                                                          "<eos>",
                                                          "<turn|>",
                                                          "<|tool_response>"};
  // Fill-in-the-middle markers, each looked for only when the file does not name its id.
  struct Fim {
    const char* key;
    std::initializer_list<std::string_view> texts;
  };
  const Fim fim_markers[] = {
      {"tokenizer.ggml.fim_pre_token_id",
       {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|code_prefix|>",
        "<|prefix|>"}},
      {"tokenizer.ggml.fim_suf_token_id",
       {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "<|code_suffix|>",
        "<|suffix|>"}},
      {"tokenizer.ggml.fim_mid_token_id",
       {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "<|code_middle|>",
        "<|middle|>"}},
      {"tokenizer.ggml.fim_pad_token_id",
       {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
      {"tokenizer.ggml.fim_rep_token_id",
       {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
      {"tokenizer.ggml.fim_sep_token_id", {"<|file_sep|>"}},
  };
  const auto find = [&](std::string_view text) -> std::optional<std::size_t> {
    const auto it = to_id.find(text);
    if (it == to_id.end()) return std::nullopt;
    return static_cast<std::size_t>(it->second);
  };
  const auto make_control = [&](std::size_t id) { types[id] = TokenType::kControl; };
  for (const std::string_view text : kEndOfGeneration) {
    if (const auto id = find(text)) make_control(*id);
  }
  for (const Fim& fim : fim_markers) {
    if (file.find(fim.key) != nullptr) continue;
    for (const std::string_view text : fim.texts) {
      if (const auto id = find(text)) {
        make_control(*id);
        break;
      }
    }
  }
  // llama.cpp's exceptions: gemma4 and paddleocr keep "</s>" as text; harmony and solar-open's
  // "<|end|>" is not an end of generation; gpt-oss renders its channel markers.
  if (find("<|tool_response>") && find("</s>")) types[*find("</s>")] = TokenType::kNormal;
  if (find("<|end|>") &&
      ((find("<|return|>") && find("<|call|>")) || (find("<|calls|>") && find("<|flush|>")))) {
    types[*find("<|end|>")] = TokenType::kUserDefined;
  }
  for (const std::string_view text : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    if (const auto id = find(text)) types[*id] = TokenType::kUserDefined;
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_gguf(const gguf::GgufFile& file) {
  auto impl = std::make_unique<Impl>();
  const std::string model = file.get_string("tokenizer.ggml.model").value_or("");
  if (model == "gpt2") {
    impl->kind = Kind::kBpe;
  } else if (model == "llama") {
    impl->kind = Kind::kSpm;
  } else if (model.empty()) {
    fail<FormatError>(
        "{}: has no tokenizer (no tokenizer.ggml.model key); use a model file that "
        "includes one",
        file.name());
  } else {
    fail<FormatError>(
        "{}: tokenizer.ggml.model is '{}'; nanochat reads 'gpt2' (byte-level BPE) "
        "and 'llama' (SentencePiece) tokenizers",
        file.name(), model);
  }
  // Typed reads: an array of another element type is an error naming the key.
  const std::vector<std::string>* tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->empty()) {
    fail<FormatError>("{}: tokenizer.ggml.tokens is missing or empty", file.name());
  }
  impl->tokens = *tokens;
  const std::size_t n = impl->tokens.size();
  impl->types.assign(n, TokenType::kNormal);
  if (const auto types = file.get_int_array("tokenizer.ggml.token_type")) {
    if (types->size() != n) {
      fail<FormatError>("{}: tokenizer.ggml.token_type has {} entries for {} tokens", file.name(),
                        types->size(), n);
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t t = (*types)[i];
      if (t < static_cast<std::int64_t>(TokenType::kUndefined) ||
          t > static_cast<std::int64_t>(TokenType::kByte)) {
        fail<FormatError>("{}: tokenizer.ggml.token_type of token {} is {}; token types are 0 to 6",
                          file.name(), i, t);
      }
      impl->types[i] = static_cast<TokenType>(t);
    }
  }
  impl->scores.assign(n, 0.0f);
  if (auto scores = file.get_float_array("tokenizer.ggml.scores")) {
    if (scores->size() != n) {
      fail<FormatError>("{}: tokenizer.ggml.scores has {} entries for {} tokens", file.name(),
                        scores->size(), n);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isnan((*scores)[i])) {
        fail<FormatError>("{}: tokenizer.ggml.scores of token {} is NaN", file.name(), i);
      }
    }
    impl->scores = std::move(*scores);
  }
  for (std::size_t i = 0; i < n; ++i) impl->to_id[impl->tokens[i]] = static_cast<TokenId>(i);

  auto token_id = [&](const char* key) -> std::optional<TokenId> {
    const auto v = file.get_int(key);
    if (!v) return std::nullopt;
    if (*v < 0 || static_cast<std::size_t>(*v) >= n) {
      fail<FormatError>("{}: {} = {} is outside the vocabulary of {} tokens", file.name(), key, *v,
                        n);
    }
    return static_cast<TokenId>(*v);
  };
  impl->bos = token_id("tokenizer.ggml.bos_token_id");
  impl->eos = token_id("tokenizer.ggml.eos_token_id");
  impl->unk = token_id("tokenizer.ggml.unknown_token_id");

  if (impl->kind == Kind::kBpe) {
    impl->pre = file.get_string("tokenizer.ggml.pre").value_or("default");
    std::string why;
    const PreTokenizer* pre = find_pre_tokenizer(impl->pre, &why);
    if (pre == nullptr) {
      fail<FormatError>(
          "{}: tokenizer.ggml.pre is '{}', a pre-tokenizer nanochat cannot run ({}); supported: "
          "{}",
          file.name(), impl->pre, why, supported_pre_tokenizers());
    }
    impl->splitter.emplace(pre->patterns);
    impl->ignore_merges = pre->ignore_merges;
    const std::vector<std::string>* merges = file.get_string_array("tokenizer.ggml.merges");
    if (merges == nullptr) {
      fail<FormatError>("{}: a BPE tokenizer needs tokenizer.ggml.merges (a list of strings)",
                        file.name());
    }
    impl->merge_rank.reserve(merges->size());
    for (std::size_t i = 0; i < merges->size(); ++i) {
      const std::string& m = (*merges)[i];
      const std::size_t space = m.find(' ', 1);
      if (space == std::string::npos) {
        fail<FormatError>("{}: merge {} ('{}') is not two tokens separated by a space", file.name(),
                          i, m);
      }
      impl->merge_rank.emplace(m, static_cast<int>(i));
    }
    impl->add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(pre->add_bos);
    impl->add_space_prefix = false;
    // The id form of the merges, when it is exactly equivalent (see Impl::id_merges).
    bool ok = true;
    for (int b = 0; b < 256 && ok; ++b) {
      const auto id = impl->lookup(byte_map().encode[b]);
      ok = id.has_value();
      if (ok) impl->byte_ids[b] = *id;
    }
    for (std::size_t i = 0; i < merges->size() && ok; ++i) {
      const std::string& m = (*merges)[i];
      const std::size_t space = m.find(' ', 1);
      const auto a = impl->lookup(std::string_view(m).substr(0, space));
      const auto b = impl->lookup(std::string_view(m).substr(space + 1));
      const auto merged = impl->lookup(m.substr(0, space) + m.substr(space + 1));
      if (!a || !b || !merged) {
        ok = false;
        break;
      }
      const std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(*a)) << 32) |
                                static_cast<std::uint32_t>(*b);
      impl->id_merges.emplace(key, std::make_pair(static_cast<int>(i), *merged));
    }
    impl->use_id_merges = ok;
    if (!ok) impl->id_merges.clear();
  } else {
    impl->pre = file.get_string("tokenizer.ggml.pre").value_or("default");
    impl->add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(true);
    impl->add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    for (int b = 0; b < 256; ++b) {
      const auto id = impl->lookup(fmt::format("<0x{:02X}>", b));
      if (!id) {
        fail<FormatError>("{}: the SentencePiece vocabulary has no byte token <0x{:02X}>",
                          file.name(), b);
      }
      impl->byte_tokens[b] = *id;
    }
  }
  impl->add_eos = file.get_bool("tokenizer.ggml.add_eos_token").value_or(false);

  mark_control_looking_tokens(file, impl->to_id, impl->types);

  for (std::size_t i = 0; i < n; ++i) {
    const TokenType t = impl->types[i];
    if ((t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) &&
        !impl->tokens[i].empty()) {
      impl->special_by_length.push_back(static_cast<TokenId>(i));
    }
  }
  std::stable_sort(impl->special_by_length.begin(), impl->special_by_length.end(),
                   [&](TokenId a, TokenId b) {
                     return impl->tokens[static_cast<std::size_t>(a)].size() >
                            impl->tokens[static_cast<std::size_t>(b)].size();
                   });
  // llama.cpp's per-model attributes: phi-3's special tokens swallow the whitespace after them,
  // except <unk>, <s> and <|endoftext|>.
  std::string name = file.get_string("general.name").value_or("");
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    impl->strip.assign(n, 0);
    for (const TokenId id : impl->special_by_length) {
      impl->strip[static_cast<std::size_t>(id)] = Impl::kRstrip;
    }
    if (const auto id = impl->lookup("</s>"))
      impl->strip[static_cast<std::size_t>(*id)] = Impl::kRstrip;
    for (const char* text : {"<unk>", "<s>", "<|endoftext|>"}) {
      if (const auto id = impl->lookup(text)) impl->strip[static_cast<std::size_t>(*id)] = 0;
    }
  }
  return Tokenizer(std::move(impl));
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& m = *impl_;
  // Fragments: raw text (token < 0) or a special token found in it.
  struct Fragment {
    TokenId token;
    std::size_t offset, length;
  };
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({-1, 0, text.size()});
  for (TokenId id : m.special_by_length) {
    const TokenType type = m.types[static_cast<std::size_t>(id)];
    if (!parse_special && type != TokenType::kUserDefined) continue;
    const std::string& needle = m.tokens[static_cast<std::size_t>(id)];
    std::vector<Fragment> next;
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::size_t pos = f.offset;
      const std::size_t end = f.offset + f.length;
      const std::uint8_t strip = m.strip.empty() ? 0 : m.strip[static_cast<std::size_t>(id)];
      const auto space = [&](std::size_t i) {
        return std::isspace(static_cast<unsigned char>(text[i])) != 0;
      };
      while (pos < end) {
        const std::size_t hit = text.substr(0, end).find(needle, pos);
        if (hit == std::string_view::npos) break;
        std::size_t left_end = hit;
        if ((strip & Impl::kLstrip) != 0) {
          while (left_end > pos && space(left_end - 1)) --left_end;
        }
        if (left_end > pos) next.push_back({-1, pos, left_end - pos});
        next.push_back({id, hit, needle.size()});
        pos = hit + needle.size();
        if ((strip & Impl::kRstrip) != 0) {
          while (pos < end && space(pos)) ++pos;
        }
      }
      if (pos < end) next.push_back({-1, pos, end - pos});
    }
    fragments = std::move(next);
  }

  std::vector<TokenId> out;
  if (add_special && m.add_bos && m.bos) out.push_back(*m.bos);
  bool prev_special = true;  // SPM: a space prefix goes before the first text
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view raw = text.substr(f.offset, f.length);
    if (m.kind == Kind::kBpe) {
      m.encode_bpe(raw, out);
    } else {
      std::string escaped;
      if (m.add_space_prefix && prev_special) escaped = "\xe2\x96\x81";
      for (char c : raw) {
        if (c == ' ') {
          escaped += "\xe2\x96\x81";  // U+2581
        } else {
          escaped += c;
        }
      }
      m.encode_spm(escaped, out);
    }
    prev_special = false;
  }
  if (add_special && m.add_eos && m.eos) out.push_back(*m.eos);
  return out;
}

std::string Tokenizer::piece(TokenId id, bool special) const {
  const Impl& m = *impl_;
  if (id < 0 || static_cast<std::size_t>(id) >= m.tokens.size()) {
    fail("token id {} is outside the vocabulary of {} tokens", id, m.tokens.size());
  }
  const std::string& text = m.tokens[static_cast<std::size_t>(id)];
  const TokenType type = m.types[static_cast<std::size_t>(id)];
  if (type == TokenType::kControl || type == TokenType::kUnknown) return special ? text : "";
  if (type == TokenType::kUserDefined) return text;
  if (m.kind == Kind::kSpm) {
    if (type == TokenType::kByte && text.size() == 6) {
      return std::string(1, static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16)));
    }
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, "\xe2\x96\x81") == 0) {
        out += ' ';
        i += 3;
      } else {
        out += text[i++];
      }
    }
    return out;
  }
  // Byte-level BPE: map each character back to its byte.
  std::string out;
  const ByteMap& bm = byte_map();
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t len = std::min(text.size() - i, utf8_len(lead));
    std::uint32_t cp = lead;
    if (len == 2) cp = ((lead & 0x1fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3fu);
    const auto it = len <= 2 ? bm.decode.find(cp) : bm.decode.end();
    if (it != bm.decode.end()) {
      out += static_cast<char>(it->second);
    } else {
      out.append(text, i, len);  // not a byte character: keep as is
    }
    i += len;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool special) const {
  std::string out;
  for (TokenId id : ids) out += piece(id, special);
  if (impl_->kind == Kind::kSpm && impl_->add_space_prefix && !out.empty() && out[0] == ' ') {
    out.erase(0, 1);
  }
  return out;
}

Tokenizer::Kind Tokenizer::kind() const { return impl_->kind; }
const std::string& Tokenizer::pre() const { return impl_->pre; }
std::size_t Tokenizer::size() const { return impl_->tokens.size(); }
std::optional<TokenId> Tokenizer::bos() const { return impl_->bos; }
std::optional<TokenId> Tokenizer::eos() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
const std::string& Tokenizer::token_text(TokenId id) const {
  return impl_->tokens.at(static_cast<std::size_t>(id));
}
TokenType Tokenizer::token_type(TokenId id) const {
  return impl_->types.at(static_cast<std::size_t>(id));
}
std::optional<TokenId> Tokenizer::find(std::string_view text) const { return impl_->lookup(text); }

std::size_t copy_tokenizer_metadata(const gguf::GgufFile& from, gguf::GgufWriter& to) {
  std::size_t copied = 0;
  for (const auto& [key, value] : from.metadata()) {
    if (key.rfind("tokenizer.", 0) == 0) {
      to.set(key, value);
      ++copied;
    }
  }
  return copied;
}

}  // namespace nanochat::model
