#include "nanochat/gguf/dequant.hpp"

#include <cstring>

#include "nanochat/gguf/types.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/fp16.hpp"

namespace nanochat::gguf {
namespace {

// One block of each type: `b` points at its bytes, `y` receives its values. The arithmetic is
// ggml's: the same float products and sums, in the same order.

void q4_0(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b);
  const std::uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void q4_1(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b), m = fp16_at(b + 2);
  const std::uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void q5_0(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b);
  std::uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const std::uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int high0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int high1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(((qs[j] & 0x0F) | high0) - 16) * d;
    y[j + 16] = static_cast<float>(((qs[j] >> 4) | high1) - 16) * d;
  }
}

void q5_1(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b), m = fp16_at(b + 2);
  std::uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const std::uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int high0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int high1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>((qs[j] & 0x0F) | high0) * d + m;
    y[j + 16] = static_cast<float>((qs[j] >> 4) | high1) * d + m;
  }
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (12 packed bytes).
void scale_min_k4(int j, const std::uint8_t* q, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void q4_k(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b), dmin = fp16_at(b + 2);
  const std::uint8_t* scales = b + 4;
  const std::uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
    int sc = 0, m = 0;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
  }
}

void q5_k(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b), dmin = fp16_at(b + 2);
  const std::uint8_t* scales = b + 4;
  const std::uint8_t* qh = b + 16;
  const std::uint8_t* ql = b + 48;
  std::uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
    int sc = 0, m = 0;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      *y++ = d1 * static_cast<float>((ql[l] & 0x0F) + ((qh[l] & u1) != 0 ? 16 : 0)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - m2;
    }
    ql += 32;
    u1 = static_cast<std::uint8_t>(u1 << 2);
    u2 = static_cast<std::uint8_t>(u2 << 2);
  }
}

void q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = fp16_at(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

void q8_0(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<std::int8_t>(b[2 + j]));
}

using BlockFn = void (*)(const std::uint8_t*, float*);

BlockFn block_fn(std::uint32_t type) {
  switch (type) {
    case type_id(TensorType::kQ4_0):
      return q4_0;
    case type_id(TensorType::kQ4_1):
      return q4_1;
    case type_id(TensorType::kQ5_0):
      return q5_0;
    case type_id(TensorType::kQ5_1):
      return q5_1;
    case type_id(TensorType::kQ8_0):
      return q8_0;
    case type_id(TensorType::kQ4_K):
      return q4_k;
    case type_id(TensorType::kQ5_K):
      return q5_k;
    case type_id(TensorType::kQ6_K):
      return q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

bool is_dequantizable(std::uint32_t type) {
  return type == type_id(TensorType::kF32) || type == type_id(TensorType::kF16) ||
         type == type_id(TensorType::kBF16) || block_fn(type) != nullptr;
}

void dequantize(std::uint32_t type, std::span<const std::uint8_t> data, std::size_t first,
                std::span<float> out) {
  const std::size_t n = out.size();
  switch (type) {
    case type_id(TensorType::kF32):
      if ((first + n) * 4 > data.size()) break;
      std::memcpy(out.data(), data.data() + first * 4, n * 4);
      return;
    case type_id(TensorType::kF16):
    case type_id(TensorType::kBF16):
      if ((first + n) * 2 > data.size()) break;
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, data.data() + 2 * (first + i), 2);
        out[i] = type == type_id(TensorType::kF16) ? fp16_to_fp32(h) : bf16_to_fp32(h);
      }
      return;
    default: {
      const BlockFn fn = block_fn(type);
      const auto info = tensor_type_info(type, "");
      if (fn == nullptr || !info) break;
      const auto block = static_cast<std::size_t>(info->block);
      const auto bytes = static_cast<std::size_t>(info->block_bytes);
      if (first % block != 0 || n % block != 0 || (first + n) / block * bytes > data.size()) break;
      const std::uint8_t* b = data.data() + first / block * bytes;
      for (std::size_t i = 0; i < n; i += block, b += bytes) fn(b, out.data() + i);
      return;
    }
  }
  throw InternalError(fmt::format("dequantize: type {}, elements {}..{} of a {}-byte tensor", type,
                                  first, first + n, data.size()));
}

}  // namespace nanochat::gguf
