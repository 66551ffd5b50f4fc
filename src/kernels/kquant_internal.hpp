// Internal to src/kernels: what the K-quant ISA kernels share, with internal linkage (each ISA
// unit compiles its own copy with its own instructions; no weak symbols across units).
#pragma once

#include <cstdint>
#include <cstring>

namespace nanochat::kernels {
namespace {

// A Q4_K block's 8 scales and 8 mins (6 bits each, packed in 12 bytes as q4_k_scales reads them)
// as four little-endian words of bytes: scales 0-3, scales 4-7, mins 0-3, mins 4-7. Word
// arithmetic in registers: no byte stores for a vector load to wait on.
inline void q4_k_scale_words(const std::uint8_t* packed, std::uint32_t out[4]) {
  std::uint32_t a, b, c;
  std::memcpy(&a, packed, 4);
  std::memcpy(&b, packed + 4, 4);
  std::memcpy(&c, packed + 8, 4);
  out[0] = a & 0x3f3f3f3fu;
  out[1] = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
  out[2] = b & 0x3f3f3f3fu;
  out[3] = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
}

}  // namespace
}  // namespace nanochat::kernels
