// GPT-2's reversible byte -> character map used by byte-level BPE. Bytes
// that are printable Latin-1 stand for themselves; the others map to U+0100 onwards in byte
// order, so every byte becomes a printable character and no token contains a raw space.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace nanochat::model {

// The character of each byte, as UTF-8 (1 or 2 bytes).
inline const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> chars = [] {
    std::array<std::string, 256> out;
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
  }();
  return chars;
}

}  // namespace nanochat::model
