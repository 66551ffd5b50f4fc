// Internal to src/kernels: what the block-quantized head kernels of each ISA share, with internal
// linkage (each ISA unit compiles its own copy with its own instructions; no weak symbols across
// units).
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

// The integer dot product sum_i q_i x_i of one 32-weight block (Q4_0 / Q4_1, or with kFive
// Q5_0 / Q5_1 and their 32-bit qh at `qh`): nibble byte l holds values l and l + 16, the fifth
// bit of value i is bit i of qh. For the blocks of a row past its last whole group of four,
// which the SIMD kernels take one at a time.
template <bool kFive>
inline std::int32_t block32_dot(const std::uint8_t* qh, const std::uint8_t* qs,
                                const std::int8_t* x) {
  std::uint32_t high = 0;
  if (kFive) std::memcpy(&high, qh, 4);
  std::int32_t a = 0;
  for (int l = 0; l < 16; ++l) {
    const int lo = (qs[l] & 0x0F) | static_cast<int>(((high >> l) & 1) << 4);
    const int hi = (qs[l] >> 4) | static_cast<int>(((high >> (l + 16)) & 1) << 4);
    a += lo * x[l] + hi * x[l + 16];
  }
  return a;
}

}  // namespace
}  // namespace nanochat::kernels
