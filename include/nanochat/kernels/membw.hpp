// Measures this machine's memory read bandwidth the way a GEMV sees it: every thread streams its
// own slice of a buffer far larger than the last-level cache with the ISA's widest loads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nanochat/kernels/isa.hpp"
#include "nanochat/util/aligned.hpp"

namespace nanochat::kernels {

class ThreadPool;

struct Bandwidth {
  double median_gbps = 0;  // 1 GB = 1e9 bytes
  double spread = 0;       // relative half-IQR
  std::size_t bytes = 0;   // buffer size read per pass
};

// A buffer to stream through, kept so that bandwidth samples can be interleaved with the work
// they are the reference for (shared machines drift; a paired sample drifts with the work).
class BandwidthProbe {
 public:
  // `bytes` 0: max(8 x L3, 256 MiB), the size of the benchmark's out-of-cache matrix, so both see
  // the same cache effects.
  explicit BandwidthProbe(std::size_t bytes = 0);
  std::size_t bytes() const { return buffer_.bytes(); }
  // One timed pass with every thread of `pool` reading its slice; GB/s.
  double sample_gbps(ThreadPool& pool, Isa isa);

 private:
  AlignedBuffer<std::uint8_t> buffer_;
  std::uint64_t sink_ = 0;
};

// One warm-up pass, then the median of `passes` passes.
Bandwidth measure_read_bandwidth(ThreadPool& pool, Isa isa, BandwidthProbe& probe, int passes = 9);

}  // namespace nanochat::kernels
