// Measures this machine's memory read bandwidth the way a GEMV sees it: every thread streams its
// own slice of a buffer far larger than the last-level cache with the ISA's widest loads.
#pragma once

#include <cstddef>

#include "nanochat/kernels/isa.hpp"

namespace nanochat::kernels {

class ThreadPool;

struct Bandwidth {
  double median_gbps = 0;  // 1 GB = 1e9 bytes
  double spread = 0;       // relative half-IQR
  std::size_t bytes = 0;   // buffer size read per pass
};

// Reads `bytes` (default: max(8 x L3, 256 MiB), the size of the benchmark's out-of-cache matrix,
// so both see the same cache effects) `passes` times after one warm-up pass.
Bandwidth measure_read_bandwidth(ThreadPool& pool, Isa isa, std::size_t bytes = 0,
                                 int passes = 9);

}  // namespace nanochat::kernels
