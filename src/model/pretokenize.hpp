// Internal to src/model: pre-tokenization by a sequence of regular expressions, the way
// llama.cpp applies them — each expression splits every current fragment into its matches and
// the text between them (kept as fragments too).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nanochat::model {

class RegexSplitter {
 public:
  // `patterns` use Perl syntax with \p{..} properties. \s and \S are rewritten to the Unicode
  // White_Space set llama.cpp uses, so classification does not depend on the PCRE2 build.
  // Throws Error when a pattern does not compile.
  explicit RegexSplitter(const std::vector<std::string>& patterns);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Fragments of `text` as (offset, length) in bytes, covering it exactly, in order.
  std::vector<std::pair<std::size_t, std::size_t>> split(std::string_view text) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> regexes_;
};

// Bytes of the UTF-8 sequence that starts with `lead` (1 for continuation bytes), as llama.cpp's
// unicode_len_utf8 counts them.
inline std::size_t utf8_len(unsigned char lead) {
  static constexpr std::size_t kLookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLookup[lead >> 4];
}

}  // namespace nanochat::model
