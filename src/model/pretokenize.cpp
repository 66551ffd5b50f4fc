// Both the 8-bit and the 32-bit PCRE2 libraries: functions are named with their width suffix.
#define PCRE2_CODE_UNIT_WIDTH 0
#include "pretokenize.hpp"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <span>

#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

// Per code point, as llama.cpp's unicode_cpt_flags: its general category (one of these bits, or
// none for separators, controls and unassigned code points) and whether it is White_Space.
// kInText marks a position inside the fragment in the splitters below (llama.cpp's `as_uint()`
// of a real code point, never 0).
enum : std::uint8_t {
  kNumber = 1,
  kLetter = 2,
  kPunctuation = 4,
  kAccentMark = 8,
  kSymbol = 16,
  kWhitespace = 32,
  kInText = 128,
};

constexpr std::uint32_t kMaxCodepoint = 0x110000;

// llama.cpp's unicode_set_whitespace.
constexpr std::uint32_t kWhitespaceList[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,
                                             0xA0,   0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
                                             0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028,
                                             0x2029, 0x202F, 0x205F, 0x3000};

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes one code point at `offset` as llama.cpp's unicode_cpt_from_utf8 does (no checks for
// overlong forms or surrogates); a byte that does not start a complete sequence is U+FFFD.
std::uint32_t decode_utf8(std::string_view s, std::size_t& offset) {
  const auto byte = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(s[i]));
  };
  const auto cont = [&](std::size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  const std::uint32_t c = byte(offset);
  if ((c & 0x80) == 0) {
    offset += 1;
    return c;
  }
  if ((c & 0x40) != 0) {
    if ((c & 0x20) == 0 && cont(offset + 1)) {
      const std::uint32_t cp = ((c & 0x1F) << 6) | (byte(offset + 1) & 0x3F);
      offset += 2;
      return cp;
    }
    if ((c & 0x30) == 0x20 && cont(offset + 1) && cont(offset + 2)) {
      const std::uint32_t cp =
          ((c & 0x0F) << 12) | ((byte(offset + 1) & 0x3F) << 6) | (byte(offset + 2) & 0x3F);
      offset += 3;
      return cp;
    }
    if ((c & 0x38) == 0x30 && cont(offset + 1) && cont(offset + 2) && cont(offset + 3)) {
      const std::uint32_t cp = ((c & 0x07) << 18) | ((byte(offset + 1) & 0x3F) << 12) |
                               ((byte(offset + 2) & 0x3F) << 6) | (byte(offset + 3) & 0x3F);
      offset += 4;
      return cp;
    }
  }
  offset += 1;
  return 0xFFFD;
}

// The flags of the code points of one block (the 256 code points that share all but the low
// 8 bits).
using FlagBlock = std::array<std::uint8_t, 256>;
constexpr std::uint32_t kBlocks = kMaxCodepoint / 256;

// Blocks of flags as they are first needed (nullptr: not yet): texts use few blocks, and
// building the whole table took 80 ms, at the first encode of every process. Never freed; a
// block is published once and then only read (acquire loads: on x86 a plain load).
std::atomic<const FlagBlock*> g_flag_blocks[kBlocks];

// PCRE2's \p{N}, \p{L}, \p{P}, \p{M}, \p{S}, compiled once (interpreted: a block is 256 code
// points, too few to repay JIT compilation).
struct CategoryCodes {
  std::array<pcre2_code_8*, 5> codes{};
  static constexpr std::pair<const char*, std::uint8_t> kCategories[5] = {{"\\p{N}+", kNumber},
                                                                          {"\\p{L}+", kLetter},
                                                                          {"\\p{P}+", kPunctuation},
                                                                          {"\\p{M}+", kAccentMark},
                                                                          {"\\p{S}+", kSymbol}};
  CategoryCodes() {
    for (std::size_t i = 0; i < codes.size(); ++i) {
      const char* pattern = kCategories[i].first;
      int error = 0;
      PCRE2_SIZE error_offset = 0;
      codes[i] = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
      if (codes[i] == nullptr) fail("internal error: PCRE2 cannot compile {}", pattern);
    }
  }
  ~CategoryCodes() {
    for (pcre2_code_8* code : codes) pcre2_code_free_8(code);
  }
  CategoryCodes(const CategoryCodes&) = delete;
  CategoryCodes& operator=(const CategoryCodes&) = delete;
};

// Builds block `b` from PCRE2's Unicode tables (each category's runs found by one search over a
// text of the block's code points; surrogates have none) and publishes it; thread-safe (a
// thread that loses the race frees its copy).
[[gnu::noinline]] const FlagBlock* load_flag_block(std::uint32_t b) {
  static const CategoryCodes categories;
  auto block = std::make_unique<FlagBlock>();
  block->fill(0);
  std::string text;
  for (std::uint32_t cp = b * 256; cp < (b + 1) * 256; ++cp) {
    if (cp < 0xD800 || cp > 0xDFFF) append_utf8(text, cp);
  }
  const std::unique_ptr<pcre2_match_data_8, decltype(&pcre2_match_data_free_8)> md_owner(
      pcre2_match_data_create_8(1, nullptr), &pcre2_match_data_free_8);
  pcre2_match_data_8* md = md_owner.get();
  const auto* subject = reinterpret_cast<PCRE2_SPTR8>(text.data());
  for (std::size_t i = 0; i < categories.codes.size(); ++i) {
    const std::uint8_t bit = CategoryCodes::kCategories[i].second;
    PCRE2_SIZE pos = 0;
    while (pos < text.size() && pcre2_match_8(categories.codes[i], subject, text.size(), pos,
                                              PCRE2_NO_UTF_CHECK, md, nullptr) > 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(md);
      for (std::size_t at = ov[0]; at < ov[1];) (*block)[decode_utf8(text, at) & 0xFF] |= bit;
      pos = ov[1];
    }
  }
  for (const std::uint32_t cp : kWhitespaceList) {
    if (cp / 256 == b) (*block)[cp & 0xFF] |= kWhitespace;
  }
  const FlagBlock* expected = nullptr;
  if (g_flag_blocks[b].compare_exchange_strong(expected, block.get(), std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
    return block.release();
  }
  return expected;
}

std::uint8_t flags_of(std::uint32_t cp) {
  if (cp >= kMaxCodepoint) return 0;
  const FlagBlock* block = g_flag_blocks[cp / 256].load(std::memory_order_acquire);
  if (block == nullptr) block = load_flag_block(cp / 256);
  return (*block)[cp & 0xFF];
}

// llama.cpp's unicode_cpt_is_han.
bool is_han(std::uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0x2CEB0 && cp <= 0x2EBEF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x2F800 && cp <= 0x2FA1F);
}

std::uint32_t ascii_lower(std::uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

// The expressions llama.cpp has hand-written splitters for (unicode_regex_split_custom): exact
// strings select them.
enum class Custom { kNone, kGpt2, kLlama3, kK2Horizon, kKimiK2, kAfmoeDigits };

Custom custom_of(const std::string& pattern) {
  if (pattern == "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)") {
    return Custom::kGpt2;
  }
  if (pattern ==
          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" ||
      pattern ==
          "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
          "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+") {
    return Custom::kLlama3;
  }
  if (pattern ==
      "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?"
      "(?:\\p{L}|\\p{M}|\\u200C|\\u200D)+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
      "\\s+(?!\\S)|\\s+") {
    return Custom::kK2Horizon;
  }
  if (pattern == "\\p{Han}+") return Custom::kKimiK2;
  // tiny_aya's digit expression is run by the AFMoE splitter too (which groups any \p{N}).
  if (pattern == "\\p{AFMoE_digits}" || pattern == "\\d{1,3}(?=(?:\\d{3})*\\b)") {
    return Custom::kAfmoeDigits;
  }
  return Custom::kNone;
}

// One fragment [ini, end) of code points for a hand-written splitter: the code point and flags
// at a position (OUT / 0 outside the fragment) and the token boundaries found so far.
class Scan {
 public:
  static constexpr std::uint32_t kOut = 0xFFFFFFFF;
  Scan(std::span<const std::uint32_t> cpts, std::size_t ini, std::size_t end,
       std::vector<std::size_t>& out)
      : cpts_(cpts), ini_(ini), end_(end), prev_end_(ini), out_(out) {}
  std::uint32_t cpt(std::size_t pos) const { return pos >= ini_ && pos < end_ ? cpts_[pos] : kOut; }
  std::uint8_t flags(std::size_t pos) const {
    return pos >= ini_ && pos < end_ ? static_cast<std::uint8_t>(flags_of(cpts_[pos]) | kInText)
                                     : std::uint8_t{0};
  }
  // Ends a token at `end`; its length in code points.
  std::size_t add(std::size_t end) {
    const std::size_t len = end - prev_end_;
    if (len > 0) out_.push_back(len);
    prev_end_ = end;
    return len;
  }
  std::size_t end() const { return end_; }

 private:
  std::span<const std::uint32_t> cpts_;
  std::size_t ini_, end_, prev_end_;
  std::vector<std::size_t>& out_;
};

bool is(std::uint8_t flags, std::uint8_t bits) { return (flags & bits) != 0; }

// 's|'t|'re|'ve|'m|'ll|'d (lower case only, or any case with `fold`) at `pos`: its length.
std::size_t contraction(const Scan& s, std::size_t pos, bool fold) {
  if (s.cpt(pos) != '\'' || pos + 1 >= s.end()) return 0;
  const auto low = [&](std::size_t p) { return fold ? ascii_lower(s.cpt(p)) : s.cpt(p); };
  const std::uint32_t a = low(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (pos + 2 >= s.end()) return 0;
  const std::uint32_t b = low(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Whitespace from `pos`: \s*[\r\n]+ , \s+(?!\S) and \s+ as llama.cpp's splitters take them
// (`newlines`: the first of them). Returns false when there is none.
bool take_whitespace(Scan& s, std::size_t& pos, bool newlines) {
  std::size_t n = 0;
  std::size_t last_newline = 0;
  while (is(s.flags(pos + n), kWhitespace)) {
    const std::uint32_t c = s.cpt(pos + n);
    if (c == '\r' || c == '\n') last_newline = pos + n + 1;
    ++n;
  }
  if (newlines && last_newline > 0) {
    pos = last_newline;
  } else if (n > 1 && s.cpt(pos + n) != Scan::kOut) {
    pos += n - 1;
  } else if (n > 0) {
    pos += n;
  } else {
    return false;
  }
  s.add(pos);
  return true;
}

// <space>?[^\s\p{L}\p{N}]+ (and [\r\n]* after it with `newlines`). It applies only when
// `lead_any`, the flags the splitter checks for "inside the fragment", are not 0: llama.cpp's
// llama3 splitter checks the first code point's, the others the one after an optional space.
bool take_other(Scan& s, std::size_t& pos, bool newlines, std::uint8_t lead_any) {
  const std::uint32_t c = s.cpt(pos);
  std::uint8_t f = c == ' ' ? s.flags(pos + 1) : s.flags(pos);
  if (is(f, kWhitespace | kLetter | kNumber) || lead_any == 0) return false;
  pos += c == ' ' ? 1 : 0;
  while (!is(f, kWhitespace | kLetter | kNumber) && f != 0) f = s.flags(++pos);
  if (newlines) {
    while (s.cpt(pos) == '\r' || s.cpt(pos) == '\n') ++pos;
  }
  s.add(pos);
  return true;
}

// \p{N}{1,3}, repeated.
void take_digits3(Scan& s, std::size_t& pos) {
  std::size_t ini = pos;
  while (is(s.flags(pos), kNumber)) {
    if (++pos - ini >= 3) {
      s.add(pos);
      ini = pos;
    }
  }
  s.add(pos);
}

// llama.cpp's unicode_regex_split_custom_gpt2.
void split_gpt2(Scan& s, std::size_t ini) {
  for (std::size_t pos = ini; pos < s.end();) {
    if (const std::size_t n = contraction(s, pos, false)) {
      pos += s.add(pos + n);
      continue;
    }
    const std::uint32_t c = s.cpt(pos);
    std::uint8_t f = c == ' ' ? s.flags(pos + 1) : s.flags(pos);
    if (is(f, kLetter) || is(f, kNumber)) {  // <space>?\p{L}+ , <space>?\p{N}+
      const std::uint8_t bit = is(f, kLetter) ? kLetter : kNumber;
      pos += c == ' ' ? 1 : 0;
      while (is(f, bit)) f = s.flags(++pos);
      s.add(pos);
      continue;
    }
    if (take_other(s, pos, false, f)) continue;
    if (take_whitespace(s, pos, false)) continue;
    s.add(++pos);
  }
}

// llama.cpp's unicode_regex_split_custom_llama3; with `marks_and_joiners` (K2-Horizon's
// expression) words also take combining marks, U+200C and U+200D.
void split_llama3(Scan& s, std::size_t ini, bool marks_and_joiners) {
  const auto word = [&](std::size_t p) {
    if (is(s.flags(p), kLetter)) return true;
    if (!marks_and_joiners) return false;
    const std::uint32_t c = s.cpt(p);
    return is(s.flags(p), kAccentMark) || c == 0x200C || c == 0x200D;
  };
  for (std::size_t pos = ini; pos < s.end();) {
    if (const std::size_t n = contraction(s, pos, true)) {
      pos += s.add(pos + n);
      continue;
    }
    const std::uint32_t c = s.cpt(pos);
    const std::uint8_t f = s.flags(pos);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(c == '\r' || c == '\n' || is(f, kNumber)) && (word(pos) || word(pos + 1))) {
      ++pos;
      while (word(pos)) ++pos;
      s.add(pos);
      continue;
    }
    if (is(f, kNumber)) {
      take_digits3(s, pos);
      continue;
    }
    if (take_other(s, pos, true, f)) continue;
    if (take_whitespace(s, pos, true)) continue;
    s.add(++pos);
  }
}

// llama.cpp's unicode_regex_split_custom_kimi_k2.
void split_kimi_k2(Scan& s, std::size_t ini) {
  const auto letter = [&](std::size_t p) { return is(s.flags(p), kLetter) && !is_han(s.cpt(p)); };
  for (std::size_t pos = ini; pos < s.end();) {
    const std::uint32_t c = s.cpt(pos);
    const std::uint8_t f = s.flags(pos);
    if (is_han(c)) {  // [\p{Han}]+
      while (is_han(s.cpt(pos))) ++pos;
      s.add(pos);
      continue;
    }
    const bool lead_ok = !(c == '\r' || c == '\n' || is(f, kLetter) || is(f, kNumber));
    if (letter(pos) || (lead_ok && letter(pos + 1))) {
      bool has_lead = false;
      if (lead_ok) {
        has_lead = true;
        ++pos;
      }
      bool has_letters = false;
      while (letter(pos)) {
        has_letters = true;
        ++pos;
      }
      if (has_letters || (!has_lead && letter(pos))) {
        if (!has_letters) ++pos;
        while (letter(pos)) ++pos;
        pos += contraction(s, pos, true);
        s.add(pos);
        continue;
      }
      if (has_lead) --pos;
    }
    if (is(f, kNumber)) {
      take_digits3(s, pos);
      continue;
    }
    if (take_other(s, pos, true, s.cpt(pos) == ' ' ? s.flags(pos + 1) : f)) continue;
    if (take_whitespace(s, pos, true)) continue;
    s.add(++pos);
  }
}

// llama.cpp's unicode_regex_split_custom_afmoe: runs of digits split into a leading group of
// (length mod 3) and groups of three; everything else stays as it is.
void split_afmoe_digits(Scan& s, std::size_t ini) {
  for (std::size_t pos = ini; pos < s.end();) {
    if (!is(s.flags(pos), kNumber)) {
      ++pos;
      continue;
    }
    const std::size_t start = pos;
    while (is(s.flags(pos), kNumber)) ++pos;
    std::size_t at = start + (pos - start) % 3;
    if (at > start) s.add(at);
    for (; at < pos; at += 3) s.add(at + 3);
  }
  s.add(s.end());
}

// llama.cpp's \p{..} names, each standing for one category of the collapsed text.
struct UnicodeClass {
  std::string_view name;
  char collapsed;          // the byte standing for non-ASCII code points of the category
  std::string_view ascii;  // the ASCII characters llama.cpp counts in it
};
constexpr UnicodeClass kClasses[] = {
    {"\\p{N}", '\xD1', "0-9"},
    {"\\p{L}", '\xD2', "A-Za-z"},
    {"\\p{P}", '\xD3', "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
    {"\\p{M}", '\xD4', ""},
    {"\\p{S}", '\xD5', "\\$\\+<->\\^`\\|\\~"},
    {"\\p{Lu}", '\xD2', "A-Za-z"},
    {"\\p{Ll}", '\xD2', "A-Za-z"},
    {"\\p{Lt}", '\xD2', "A-Za-z"},
    {"\\p{Lm}", '\xD2', "A-Za-z"},
    {"\\p{Lo}", '\xD2', "A-Za-z"},
};

bool uses_classes(const std::string& pattern) {
  return std::any_of(std::begin(kClasses), std::end(kClasses), [&](const UnicodeClass& c) {
    return pattern.find(c.name) != std::string::npos;
  });
}

// The byte llama.cpp's collapsed text has for code point `cp`.
char collapse(std::uint32_t cp) {
  if (cp < 0x80) return static_cast<char>(cp);
  const std::uint8_t f = flags_of(cp);
  if (is(f, kWhitespace)) return '\x0B';
  if (is(f, kNumber)) return '\xD1';
  if (is(f, kLetter)) return '\xD2';
  if (is(f, kPunctuation)) return '\xD3';
  if (is(f, kAccentMark)) return '\xD4';
  if (is(f, kSymbol)) return '\xD5';
  return '\xD0';
}

// The pattern over the collapsed text, rewritten as llama.cpp does: each \p{..} becomes its
// category's byte and ASCII characters, in brackets unless it is inside a class already.
std::string collapse_pattern(const std::string& pattern) {
  std::string out;
  bool inside = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      fail(
          "pre-tokenizer pattern '{}' mixes \\p{{..}} classes with non-ASCII characters, "
          "which llama.cpp does not support",
          pattern);
    }
    if (c == '[' && (i == 0 || pattern[i - 1] != '\\')) {
      out += c;
      inside = true;
      continue;
    }
    if (inside && c == ']' && pattern[i - 1] != '\\') {
      out += c;
      inside = false;
      continue;
    }
    if (c == '\\' && i + 3 < pattern.size() && pattern[i + 1] == 'p' && pattern[i + 2] == '{') {
      const std::size_t close = pattern.find('}', i + 3);
      if (close != std::string::npos) {
        const std::string_view name = std::string_view(pattern).substr(i, close - i + 1);
        const auto* cls = std::find_if(std::begin(kClasses), std::end(kClasses),
                                       [&](const UnicodeClass& k) { return k.name == name; });
        if (cls != std::end(kClasses)) {
          if (!inside) out += '[';
          out += cls->collapsed;
          out += cls->ascii;
          if (!inside) out += ']';
          i = close;
          continue;
        }
      }
    }
    out += c;
  }
  return out;
}

[[noreturn]] void compile_error(const std::string& pattern, int error, std::size_t offset) {
  PCRE2_UCHAR8 message[256];
  pcre2_get_error_message_8(error, message, sizeof(message));
  fail("pre-tokenizer pattern '{}' does not compile at offset {}: {}", pattern, offset,
       reinterpret_cast<const char*>(message));
}

// std::regex_iterator's walk over one fragment, as llama.cpp's unicode_regex_split_stl: the
// text between matches is a fragment too; after an empty match, a non-empty match at the same
// place is tried, else the search goes on one code unit later. `match(from, flags)` gives the
// match [start, end) found from `from`, or false.
template <typename Match>
void walk_matches(std::size_t length, Match match, std::vector<std::size_t>& out) {
  std::size_t start_idx = 0;
  std::size_t s = 0, e = 0;
  bool found = match(0, 0u, s, e);
  while (found) {
    if (s > start_idx) out.push_back(s - start_idx);
    out.push_back(e - s);
    start_idx = e;
    if (e == s) {
      if (e == length) break;
      found = match(e, PCRE2_ANCHORED | PCRE2_NOTEMPTY_ATSTART, s, e) || match(e + 1, 0u, s, e);
    } else {
      found = match(e, 0u, s, e);
    }
  }
  if (start_idx < length) out.push_back(length - start_idx);
}

}  // namespace

// One compiled expression: a hand-written splitter, or PCRE2 over the collapsed text (8-bit,
// one byte per code point) or over the code points themselves (32-bit).
struct RegexSplitter::Expression {
  Custom custom = Custom::kNone;
  pcre2_code_8* collapsed = nullptr;
  pcre2_code_32* wide = nullptr;
  // JIT-compiled: matched with pcre2_jit_match, which skips pcre2_match's checks of its
  // arguments (a tenth of deepseek-coder's encode time: it runs once per fragment and match).
  bool jit = false;
  ~Expression() {
    pcre2_code_free_8(collapsed);
    pcre2_code_free_32(wide);
  }
};

RegexSplitter::RegexSplitter(const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    auto expr = std::make_unique<Expression>();
    expr->custom = custom_of(p);
    int error = 0;
    PCRE2_SIZE offset = 0;
    if (expr->custom != Custom::kNone) {
      // no PCRE2 code
    } else if (uses_classes(p)) {
      const std::string rewritten = collapse_pattern(p);
      expr->collapsed =
          pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(rewritten.data()), rewritten.size(),
                          PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
      if (expr->collapsed == nullptr) compile_error(p, error, offset);
      expr->jit = pcre2_jit_compile_8(expr->collapsed, PCRE2_JIT_COMPLETE) == 0;
    } else {
      std::vector<std::uint32_t> units;
      for (std::size_t at = 0; at < p.size();) units.push_back(decode_utf8(p, at));
      expr->wide = pcre2_compile_32(reinterpret_cast<PCRE2_SPTR32>(units.data()), units.size(),
                                    PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
      if (expr->wide == nullptr) compile_error(p, error, offset);
      expr->jit = pcre2_jit_compile_32(expr->wide, PCRE2_JIT_COMPLETE) == 0;
    }
    expressions_.push_back(std::move(expr));
  }
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

namespace {

// split()'s working memory, kept per thread between calls: the buffers are several times the
// text (4 bytes a code point, 8 a fragment), and allocating them afresh on every call cost more
// than the split itself — a 1 MB text's buffers come from mmap and fault in page by page
// (encode on wikitext: 11 MB/s with per-call buffers, 30 MB/s with these). They keep the
// capacity of the largest text the thread has split, up to kKeepCodepoints: a larger text's are
// freed after its split, so a thread does not hold hundreds of MB after one huge text.
struct SplitScratch {
  // At most 42 MB kept (21 bytes a code point, for code points and fragments alike).
  static constexpr std::size_t kKeepCodepoints = std::size_t{1} << 21;
  // The text's code points, White_Space outside ASCII as U+000B: the 32-bit expressions see
  // it so (\s is llama.cpp's list, not PCRE2's), and to the splitters and the collapsed text
  // the two are the same (only the White_Space flag; neither is \r, \n or a space).
  std::vector<std::uint32_t> cpts;
  std::vector<std::size_t> lengths;  // fragments as lengths in code points, as llama.cpp
  std::vector<std::size_t> next;     // the fragments the current expression makes
  std::string collapsed;             // built when an expression needs it
  // Only the whole match is read: a block smaller than an expression's groups still holds it.
  std::unique_ptr<pcre2_match_data_8, decltype(&pcre2_match_data_free_8)> md8{
      pcre2_match_data_create_8(1, nullptr), &pcre2_match_data_free_8};
  std::unique_ptr<pcre2_match_data_32, decltype(&pcre2_match_data_free_32)> md32{
      pcre2_match_data_create_32(1, nullptr), &pcre2_match_data_free_32};

  void trim() {
    if (cpts.capacity() <= kKeepCodepoints && lengths.capacity() <= kKeepCodepoints &&
        next.capacity() <= kKeepCodepoints) {
      return;
    }
    std::vector<std::uint32_t>().swap(cpts);
    std::vector<std::size_t>().swap(lengths);
    std::vector<std::size_t>().swap(next);
    std::string().swap(collapsed);
  }
};

SplitScratch& split_scratch() {
  thread_local SplitScratch scratch;
  return scratch;
}

}  // namespace

std::vector<std::pair<std::size_t, std::size_t>> RegexSplitter::split(std::string_view text) const {
  SplitScratch& sc = split_scratch();
  std::vector<std::uint32_t>& cpts = sc.cpts;
  cpts.clear();
  for (std::size_t at = 0; at < text.size();) {
    const auto c = static_cast<unsigned char>(text[at]);
    if (c < 0x80) {
      cpts.push_back(c);
      ++at;
    } else {
      const std::uint32_t cp = decode_utf8(text, at);
      cpts.push_back(is(flags_of(cp), kWhitespace) ? 0x0B : cp);
    }
  }
  const std::size_t n = cpts.size();

  sc.collapsed.clear();
  std::vector<std::size_t>& lengths = sc.lengths;
  std::vector<std::size_t>& next = sc.next;
  lengths.assign(1, n);
  pcre2_match_data_8* md8 = sc.md8.get();
  pcre2_match_data_32* md32 = sc.md32.get();
  for (const auto& expr : expressions_) {
    next.clear();
    std::size_t start = 0;
    for (const std::size_t length : lengths) {
      const std::size_t end = start + length;
      if (length == 0) continue;
      if (expr->custom != Custom::kNone) {
        Scan s(cpts, start, end, next);
        switch (expr->custom) {
          case Custom::kGpt2:
            split_gpt2(s, start);
            break;
          case Custom::kLlama3:
            split_llama3(s, start, false);
            break;
          case Custom::kK2Horizon:
            split_llama3(s, start, true);
            break;
          case Custom::kKimiK2:
            split_kimi_k2(s, start);
            break;
          case Custom::kAfmoeDigits:
            split_afmoe_digits(s, start);
            break;
          case Custom::kNone:
            break;
        }
      } else if (expr->collapsed != nullptr) {
        std::string& collapsed = sc.collapsed;
        if (collapsed.empty() && n > 0) {
          collapsed.resize(n);
          for (std::size_t i = 0; i < n; ++i) collapsed[i] = collapse(cpts[i]);
        }
        const auto* subject = reinterpret_cast<PCRE2_SPTR8>(collapsed.data() + start);
        walk_matches(
            length,
            [&](std::size_t from, std::uint32_t flags, std::size_t& s, std::size_t& e) {
              if (from > length) return false;
              // PCRE2 10.42's JIT does not take PCRE2_ANCHORED at match time.
              const int rc =
                  expr->jit && (flags & PCRE2_ANCHORED) == 0
                      ? pcre2_jit_match_8(expr->collapsed, subject, length, from, flags, md8,
                                          nullptr)
                      : pcre2_match_8(expr->collapsed, subject, length, from, flags, md8, nullptr);
              if (rc < 0) return false;
              const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(md8);
              s = ov[0];
              e = ov[1];
              return true;
            },
            next);
      } else {
        const auto* subject = reinterpret_cast<PCRE2_SPTR32>(cpts.data() + start);
        walk_matches(
            length,
            [&](std::size_t from, std::uint32_t flags, std::size_t& s, std::size_t& e) {
              if (from > length) return false;
              const int rc =
                  expr->jit && (flags & PCRE2_ANCHORED) == 0
                      ? pcre2_jit_match_32(expr->wide, subject, length, from, flags, md32, nullptr)
                      : pcre2_match_32(expr->wide, subject, length, from, flags, md32, nullptr);
              if (rc < 0) return false;
              const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_32(md32);
              s = ov[0];
              e = ov[1];
              return true;
            },
            next);
      }
      start = end;
    }
    lengths.swap(next);
  }

  // Code points back to bytes: the text is decoded again, in the same steps (all ASCII: one byte
  // each).
  std::vector<std::pair<std::size_t, std::size_t>> fragments;
  fragments.reserve(lengths.size());
  const bool ascii = n == text.size();
  std::size_t at = 0;
  for (const std::size_t length : lengths) {
    if (length == 0) continue;
    const std::size_t from = at;
    if (ascii) {
      at += length;
    } else {
      for (std::size_t i = 0; i < length; ++i) {
        if (static_cast<unsigned char>(text[at]) < 0x80) {
          ++at;
        } else {
          (void)decode_utf8(text, at);
        }
      }
    }
    fragments.emplace_back(from, at - from);
  }
  sc.trim();
  return fragments;
}

}  // namespace nanochat::model
