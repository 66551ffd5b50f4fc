#include "nanochat/kernels/membw.hpp"

#include <algorithm>
#include <atomic>
#include <vector>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::kernels {

BandwidthProbe::BandwidthProbe(std::size_t bytes) {
  if (bytes == 0) bytes = std::max<std::size_t>(8 * cpu_info().l3_bytes, std::size_t{256} << 20);
  bytes = (bytes + 4095) / 4096 * 4096;
  buffer_ = AlignedBuffer<std::uint8_t>(bytes);
  for (std::size_t j = 0; j < bytes; j += 64) buffer_[j] = static_cast<std::uint8_t>(j >> 6);
}

double BandwidthProbe::sample_gbps(ThreadPool& pool, Isa isa) {
  const auto parts = static_cast<std::size_t>(pool.size());
  // Slices are whole 256-byte steps of the probe loops.
  const std::size_t slice = buffer_.bytes() / parts / 256 * 256;
  const ReadProbeFn probe = kernel_info(isa).read_probe;
  std::atomic<std::uint64_t> sink{0};
  const double start = now_seconds();
  pool.run([&](int i) {
    sink.fetch_add(probe(buffer_.data() + slice * static_cast<std::size_t>(i), slice),
                   std::memory_order_relaxed);
  });
  const double elapsed = now_seconds() - start;
  sink_ += sink.load();
  return static_cast<double>(slice * parts) / elapsed / 1e9;
}

Bandwidth measure_read_bandwidth(ThreadPool& pool, Isa isa, BandwidthProbe& probe, int passes) {
  (void)probe.sample_gbps(pool, isa);  // warm-up
  std::vector<double> samples;
  for (int pass = 0; pass < passes; ++pass) samples.push_back(probe.sample_gbps(pool, isa));
  const Summary s = summarize(samples);
  return Bandwidth{s.median, s.spread, probe.bytes()};
}

}  // namespace nanochat::kernels
