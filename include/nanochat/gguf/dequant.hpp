// Dequantization of the float and block-quantized ggml types nanochat reads embeddings, gains
// and output heads from: F32, F16, BF16, Q8_0, and the types llama.cpp's quantizer writes for
// them (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K). The values equal ggml's reference
// dequantization bit for bit (the same products in the same order), checked against vectors
// made by an independent implementation (tests/data/dequant/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace nanochat::gguf {

// True for the types dequantize() reads.
bool is_dequantizable(std::uint32_t type);

// Writes out.size() values of a tensor of `type` stored in `data`, starting at element `first`.
// `first` and out.size() must be multiples of the type's block size and `data` must hold those
// blocks (the caller checked the tensor's extent); throws InternalError otherwise.
void dequantize(std::uint32_t type, std::span<const std::uint8_t> data, std::size_t first,
                std::span<float> out);

}  // namespace nanochat::gguf
