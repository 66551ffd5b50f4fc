// A small, fast, deterministic generator for test data and timing inputs (not for sampling:
// the sampler has its own seeded generator).
#pragma once

#include <cstdint>

namespace nanochat {

// Marsaglia's xorshift64. The seed must not be 0.
struct XorShift64 {
  std::uint64_t state;
  std::uint64_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
};

}  // namespace nanochat
