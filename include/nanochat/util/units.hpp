// Sizes for messages: "12.0 MiB", "8.0 EiB". Takes a double so that a size computed from any
// file or flag value can be shown without having wrapped.
#pragma once

#include <fmt/format.h>

#include <iterator>
#include <string>

namespace nanochat {

inline std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  while (bytes >= 1024 && unit + 1 < static_cast<int>(std::size(kUnits))) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} bytes", bytes)
                   : fmt::format("{:.1f} {}", bytes, kUnits[unit]);
}

}  // namespace nanochat
