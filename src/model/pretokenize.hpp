// Internal to src/model: pre-tokenization by a sequence of regular expressions, the way
// llama.cpp's unicode_regex_split applies them — each expression splits every current fragment
// into its matches and the text between them (kept as fragments too).
//
// llama.cpp runs its expressions with C++ std::regex in the C locale, over code points, and
// departs from the Unicode categories in ways that change where words end; nanochat follows it:
//   - `\s` is llama.cpp's White_Space list, `\d`, `\w` and `\b` are ASCII only;
//   - `\p{L}`, `\p{Lu}`, `\p{Ll}`, `\p{Lt}`, `\p{Lm}` and `\p{Lo}` all mean "any letter";
//   - every character outside ASCII is one of: White_Space, or of category N, L, P, M or S, or
//     "other" (which only negated classes match); one expression sees one code point at a time;
//   - `$` is the end of the fragment, an empty match is followed by a search one code point on;
//   - expressions llama.cpp has hand-written splitters for (GPT-2's, Llama 3's, Kimi K2's,
//     AFMoE's digits) use ports of those splitters.
// The Unicode categories themselves come from PCRE2's tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nanochat::model {

class RegexSplitter {
 public:
  // `patterns` in llama.cpp's (ECMAScript) syntax, applied in order. Throws Error when a
  // pattern does not compile.
  explicit RegexSplitter(const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Fragments of `text` as (offset, length) in bytes, covering it exactly, in order; none is
  // empty. Bytes that are not UTF-8 count as one code point each (U+FFFD, as llama.cpp reads
  // them) but stay the bytes they were.
  std::vector<std::pair<std::size_t, std::size_t>> split(std::string_view text) const;

  struct Expression;

 private:
  std::vector<std::unique_ptr<Expression>> expressions_;
};

// Bytes of the UTF-8 sequence that starts with `lead` (1 for continuation bytes), as llama.cpp's
// unicode_len_utf8 counts them.
inline std::size_t utf8_len(unsigned char lead) {
  static constexpr std::size_t kLookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLookup[lead >> 4];
}

}  // namespace nanochat::model
