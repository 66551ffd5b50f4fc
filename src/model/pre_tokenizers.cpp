#include "pre_tokenizers.hpp"

#include <algorithm>
#include <map>

namespace nanochat::model {
namespace {

// llama.cpp's expressions (src/llama-vocab.cpp, llm_tokenizer_bpe), character for character:
// pretokenize.cpp reads them the way llama.cpp's unicode_regex_split does, and the strings
// llama.cpp has hand-written splitters for must stay exactly as they are to select them.
// clang-format off
const std::map<std::string_view, PreTokenizer>& groups() {
  static const std::map<std::string_view, PreTokenizer> table = {
      // default: no tokenizer.ggml.pre, or 'default'
      {"default", {{"[\\p{P}\\$\\+<=>\\^~\\|]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "\\p{N}+", "[0-9][0-9][0-9]"}, false, false}},
      // llama3: Llama 3's expression; a word that is a token is not merged; BOS by default
      {"llama3", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, true, true}},
      // llama3-merges: the same expression, merged as usual
      {"llama3-merges", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // minicpm5: digits in threes first
      {"minicpm5", {{"\\p{N}{1,3}", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, true, false}},
      // jais2: whitespace in runs of powers of two
      {"jais2", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"}, false, false}},
      // deepseek-llm: explicit letter ranges (no Devanagari: it falls into the CJK range U+0800-U+4E00 whole)
      {"deepseek-llm", {{"[\r\n]", "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+", "\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+", "\\s+$", "[一-龥ࠀ-一가-\uD7FF]+", "\\p{N}+"}, false, false}},
      // deepseek-coder
      {"deepseek-coder", {{"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-\uD7FF]+", "\\p{N}"}, false, false}},
      // deepseek-v3
      {"deepseek-v3", {{"\\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // spark2_5
      {"spark2_5", {{"\\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+", "\\p{N}"}, false, false}},
      // youtu: Hangul, CJK punctuation, Bopomofo and CJK runs first
      {"youtu", {{"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥\u3040-ゟ゠-ヿ]+", "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, true, false}},
      // falcon
      {"falcon", {{"[\\p{P}\\$\\+<=>\\^~\\|`]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "[0-9][0-9][0-9]"}, false, false}},
      // starcoder: single digits
      {"starcoder", {{"\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}, false, false}},
      // gpt-2: GPT-2's expression
      {"gpt-2", {{"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}, false, false}},
      // qwen2: single digits
      {"qwen2", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // qwen35: letters with their marks
      {"qwen35", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // poro
      {"poro", {{" ?[^(\\s|.,!?…。，、।۔،)]+"}, false, false}},
      // viking
      {"viking", {{" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}, false, false}},
      // tekken: letters by case with lookaheads; BOS by default
      {"tekken", {{"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, true, true}},
      // chameleon: sentinel and image tokens, then GPT-2's expression; BOS by default
      {"chameleon", {{"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}, false, true}},
      // gpt-4o
      {"gpt-4o", {{"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // granite-multi: gpt-4o's with marks
      {"granite-multi", {{"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, true, false}},
      // tiny_aya: digits grouped in threes from the right
      {"tiny_aya", {{"\\d{1,3}(?=(?:\\d{3})*\\b)", "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // kimi-k2: llama.cpp's hand-written splitter (Han runs apart)
      {"kimi-k2", {{"\\p{Han}+"}, false, false}},
      // superbpe: digits grouped in threes from the right
      {"superbpe", {{"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}, false, false}},
      // bailingmoe
      {"bailingmoe", {{"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}, false, false}},
      // seed-coder
      {"seed-coder", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // ufakzeka: qwen2's without contractions
      {"ufakzeka", {{"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // afmoe: llama.cpp's hand-written digit splitter, CJK and Southeast Asian scripts apart
      {"afmoe", {{"\\p{AFMoE_digits}", "[一-鿿㐀-䶿豈-\uFAFF\u3040-ゟ゠-ヿ･-ﾟ⼀-\u2FDFเ-\u0E7F\u0E80-\u0EFFក-\u17FFက-႟ꩠ-ꩿꧠ-\uA9FF가-\uD7AFᄀ-ᇿ]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // laguna: lines first
      {"laguna", {{"[^\\n]+|[\\n]+", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
      // exaone-moe
      {"exaone-moe", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}, false, false}},
      // k2-horizon
      {"k2-horizon", {{"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}|\\p{M}|\\u200C|\\u200D)+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, false, false}},
  };
  return table;
}
// clang-format on

}  // namespace

const std::vector<PreTokenizerName>& pre_tokenizer_names() {
  // The names llama.cpp's llama_vocab::impl::load accepts (build 11669: every name libllama
  // tokenizes with in tests/data/llama-tokenize/pre/) and the expressions each selects; its
  // per-name flags are in the groups (ignore_merges, add_bos). Settings that only change
  // detokenization (clean_spaces) do not matter here; nor does add_sep (jina-v1-en,
  // jina-v2-code, roberta-bpe), which BPE encoding does not use.
  static const std::vector<PreTokenizerName> names = {
      {"default", "default", ""},
      {"minicpm5", "minicpm5", ""},
      {"llama3", "llama3", ""},
      {"llama-v3", "llama3", ""},
      {"llama-bpe", "llama3", ""},
      {"falcon3", "llama3", ""},
      {"falcon-h1", "llama3", ""},
      {"pixtral", "llama3", ""},
      {"midm-2.0", "llama3", ""},
      {"lfm2", "llama3", ""},
      {"jina-v5-nano", "llama3", ""},
      {"deepseek-llm", "deepseek-llm", ""},
      {"deepseek-coder", "deepseek-coder", ""},
      {"deepseek-v3", "deepseek-v3", ""},
      {"spark2_5", "spark2_5", ""},
      {"youtu", "youtu", ""},
      {"falcon", "falcon", ""},
      {"mpt", "gpt-2", ""},
      {"starcoder", "starcoder", ""},
      {"gpt-2", "gpt-2", ""},
      {"phi-2", "gpt-2", ""},
      {"jina-es", "gpt-2", ""},
      {"jina-de", "gpt-2", ""},
      {"gigachat", "gpt-2", ""},
      {"jina-v2-es", "gpt-2", ""},
      {"jina-v2-de", "gpt-2", ""},
      {"a.x-4.0", "gpt-2", ""},
      {"mellum", "gpt-2", ""},
      {"modern-bert", "gpt-2", ""},
      {"jais-2", "jais2", ""},
      {"gemma4", "", "SentencePiece-style BPE over raw UTF-8 (spaces as U+2581), not byte-level"},
      {"granite-embed-multi-311m", "",
       "SentencePiece-style BPE over raw UTF-8 (spaces as U+2581), not byte-level"},
      {"sarvam-moe", "",
       "SentencePiece-style BPE over raw UTF-8 (spaces as U+2581), not byte-level"},
      {"jina-v1-en", "gpt-2", ""},
      {"jina-v2-code", "gpt-2", ""},
      {"roberta-bpe", "gpt-2", ""},
      {"whitespace", "", "BPE over raw UTF-8 words split at whitespace, not byte-level"},
      {"refact", "starcoder", ""},
      {"command-r", "starcoder", ""},
      {"qwen2", "qwen2", ""},
      {"deepseek-r1-qwen", "qwen2", ""},
      {"kormo", "qwen2", ""},
      {"f2llmv2", "qwen2", ""},
      {"qwen35", "qwen35", ""},
      {"stablelm2", "qwen2", ""},
      {"olmo", "gpt-2", ""},
      {"dbrx", "llama3-merges", ""},
      {"smaug-bpe", "llama3-merges", ""},
      {"poro-chat", "poro", ""},
      {"glm4", "llama3-merges", ""},
      {"chatglm-bpe", "llama3-merges", ""},
      {"glm5", "llama3-merges", ""},
      {"viking", "viking", ""},
      {"jais", "gpt-2", ""},
      {"tekken", "tekken", ""},
      {"smollm", "starcoder", ""},
      {"codeshell", "starcoder", ""},
      {"bloom", "poro", ""},
      {"gpt3-finnish", "poro", ""},
      {"exaone", "starcoder", ""},
      {"exaone4", "gpt-2", ""},
      {"exaone-moe", "exaone-moe", ""},
      {"chameleon", "chameleon", ""},
      {"minerva-7b", "starcoder", ""},
      {"megrez", "qwen2", ""},
      {"gpt-4o", "gpt-4o", ""},
      {"llama4", "gpt-4o", ""},
      {"kanana2", "gpt-4o", ""},
      {"talkie", "gpt-4o", ""},
      {"granite-embed-multi-97m", "granite-multi", ""},
      {"tiny_aya", "tiny_aya", ""},
      {"cohere2moe", "tiny_aya", ""},
      {"superbpe", "superbpe", ""},
      {"trillion", "gpt-2", ""},
      {"granite-docling", "gpt-2", ""},
      {"bailingmoe", "bailingmoe", ""},
      {"bailingmoe2", "bailingmoe", ""},
      {"llada-moe", "bailingmoe", ""},
      {"seed-coder", "seed-coder", ""},
      {"hunyuan", "qwen2", ""},
      {"hunyuan-dense", "deepseek-v3", ""},
      {"hy_v4", "deepseek-v3", ""},
      {"joyai-llm", "deepseek-v3", ""},
      {"kimi-k2", "kimi-k2", ""},
      {"ufakzeka", "ufakzeka", ""},
      {"grok-2", "qwen2", ""},
      {"afmoe", "afmoe", ""},
      {"laguna", "laguna", ""},
      {"minimax-m2", "gpt-4o", ""},
      {"solar-open", "qwen2", ""},
      {"mellum2", "starcoder", ""},
      {"mmbert", "", "SentencePiece-style BPE over raw UTF-8 (spaces as U+2581), not byte-level"},
      {"k2-horizon", "k2-horizon", ""},
  };
  return names;
}

const PreTokenizer* find_pre_tokenizer(std::string_view name, std::string* why) {
  if (name.empty()) name = "default";
  const auto& names = pre_tokenizer_names();
  const auto it = std::find_if(names.begin(), names.end(),
                               [&](const PreTokenizerName& n) { return n.name == name; });
  if (it == names.end()) {
    if (why != nullptr) *why = "llama.cpp does not know it either";
    return nullptr;
  }
  if (it->group.empty()) {
    if (why != nullptr) *why = std::string(it->why);
    return nullptr;
  }
  return &groups().at(it->group);
}

std::string supported_pre_tokenizers() {
  std::string out;
  for (const PreTokenizerName& n : pre_tokenizer_names()) {
    if (n.group.empty()) continue;
    if (!out.empty()) out += ", ";
    out += n.name;
  }
  return out;
}

}  // namespace nanochat::model
