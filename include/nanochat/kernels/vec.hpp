// Float vector helpers for attention (inference and training), cloned per ISA by the compiler
// (x86-64-v4, -v3, baseline) and picked by the loader for the CPU at hand.
#pragma once

#include <cstdint>

namespace nanochat::kernels {

// sum_i a[i] * b[i], summed in 16 independent lanes (a fixed order for a given ISA).
float dot_f32(const float* a, const float* b, std::int64_t n);

// y[i] += w * x[i]
void axpy_f32(float w, const float* x, float* y, std::int64_t n);

}  // namespace nanochat::kernels
