#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretokenize.hpp"

#include <pcre2.h>

#include "nanochat/util/error.hpp"

namespace nanochat::model {
namespace {

// Unicode White_Space, as llama.cpp's unicode_set_whitespace lists it.
constexpr const char* kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

std::string rewrite_whitespace(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char n = pattern[i + 1];
      if (n == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (n == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class)
      in_class = true;
    else if (c == ']' && in_class)
      in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    const std::string rewritten = rewrite_whitespace(p);
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto compiled = std::make_unique<Compiled>();
    compiled->code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.c_str()), rewritten.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (compiled->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail("pre-tokenizer pattern '{}' does not compile at offset {}: {}", p, offset,
           reinterpret_cast<const char*>(message));
    }
    (void)pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);  // falls back to interpreter
    regexes_.push_back(std::move(compiled));
  }
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

std::vector<std::pair<std::size_t, std::size_t>> RegexSplitter::split(std::string_view text) const {
  std::vector<std::pair<std::size_t, std::size_t>> fragments;
  if (!text.empty()) fragments.emplace_back(0, text.size());
  for (const auto& regex : regexes_) {
    std::vector<std::pair<std::size_t, std::size_t>> next;
    next.reserve(fragments.size() * 2);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex->code, nullptr);
    for (const auto& [start, length] : fragments) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + start);
      std::size_t pos = 0;
      std::size_t gap_start = 0;
      while (pos < length) {
        const int rc = pcre2_match(regex->code, subject, length, pos, 0, md, nullptr);
        if (rc < 0) break;  // no more matches (or an error: treat the rest as a gap)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const std::size_t m_start = ov[0], m_end = ov[1];
        if (m_start > gap_start) next.emplace_back(start + gap_start, m_start - gap_start);
        if (m_end > m_start) {
          next.emplace_back(start + m_start, m_end - m_start);
          gap_start = pos = m_end;
        } else {
          // An empty match: step over one character so the search moves on.
          pos = m_start + std::min(utf8_len(static_cast<unsigned char>(text[start + m_start])),
                                   length - m_start);
          gap_start = m_start;
        }
      }
      if (gap_start < length) next.emplace_back(start + gap_start, length - gap_start);
    }
    pcre2_match_data_free(md);
    fragments = std::move(next);
  }
  return fragments;
}

}  // namespace nanochat::model
