// Internal to src/kernels: compile-time loops for register-resident micro-kernels.
#pragma once

#include <type_traits>
#include <utility>

namespace nanochat::kernels {

// Calls f(std::integral_constant<int, 0>) ... f(std::integral_constant<int, N - 1>). Micro-kernels
// index their register arrays with these compile-time constants instead of loop counters: GCC
// only keeps such arrays in registers when every index is a constant before loop unrolling runs,
// and when both this function and its inner lambda are inlined (a large body otherwise leaves the
// lambda out of line, with the arrays on the stack).
template <int N, typename F>
inline __attribute__((always_inline)) void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) __attribute__((always_inline)) {
    (f(std::integral_constant<int, I>{}), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

}  // namespace nanochat::kernels
