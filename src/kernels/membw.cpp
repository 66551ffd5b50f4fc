#include "nanochat/kernels/membw.hpp"

#include <algorithm>
#include <atomic>
#include <vector>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/aligned.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::kernels {

Bandwidth measure_read_bandwidth(ThreadPool& pool, Isa isa, std::size_t bytes, int passes) {
  if (bytes == 0) bytes = std::max<std::size_t>(8 * cpu_info().l3_bytes, std::size_t{256} << 20);
  const std::size_t parts = static_cast<std::size_t>(pool.size());
  const std::size_t slice = bytes / parts / 4096 * 4096;
  bytes = slice * parts;
  AlignedBuffer<std::uint8_t> buffer(bytes);
  // Fill each slice from the thread that will read it (first touch puts pages near it).
  pool.run([&](int i) {
    std::uint8_t* p = buffer.data() + slice * static_cast<std::size_t>(i);
    for (std::size_t j = 0; j < slice; j += 64) p[j] = static_cast<std::uint8_t>(j >> 6);
  });
  const ReadProbeFn probe = kernel_info(isa).read_probe;
  std::atomic<std::uint64_t> sink{0};
  std::vector<double> samples;
  for (int pass = -1; pass < passes; ++pass) {
    const double start = now_seconds();
    pool.run([&](int i) {
      sink.fetch_add(probe(buffer.data() + slice * static_cast<std::size_t>(i), slice),
                     std::memory_order_relaxed);
    });
    const double elapsed = now_seconds() - start;
    if (pass >= 0) samples.push_back(static_cast<double>(bytes) / elapsed / 1e9);
  }
  const Summary s = summarize(samples);
  return Bandwidth{s.median, s.spread, bytes};
}

}  // namespace nanochat::kernels
