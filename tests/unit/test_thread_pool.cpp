#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {
namespace {

TEST(ThreadPool, RunsEveryIndexOnce) {
  for (int n : {1, 2, 3, 8}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.run([&](int i) { hits[static_cast<std::size_t>(i)]++; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, ParallelForCoversTheRangeExactly) {
  ThreadPool pool(3);
  for (std::int64_t n : {0, 1, 2, 5, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.parallel_for(n, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

// Four threads: on a machine with fewer CPUs (CI's has two) the spin-waits must yield the cores.
TEST(ThreadPool, ManyBackToBackJobsAndWakeUpsAfterSleep) {
  ThreadPool pool(4);
  std::atomic<long> total{0};
  for (int round = 0; round < 20000; ++round) pool.run([&](int i) { total += i; });
  EXPECT_EQ(total.load(), 20000L * 6);
  // Let the workers fall asleep, then wake them again.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (int round = 0; round < 10; ++round) {
    pool.run([&](int i) { total += i; });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(total.load(), 20010L * 6);
}

TEST(ThreadPool, ExceptionsReachTheCaller) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.run([](int i) {
    if (i == 2) throw std::runtime_error("boom");
  }),
               std::runtime_error);
  std::atomic<int> after{0};
  pool.run([&](int) { after++; });  // still usable
  EXPECT_EQ(after.load(), 3);
}

TEST(ThreadPool, ZeroThreadsIsAUsageError) { EXPECT_THROW(ThreadPool(0), UsageError); }

}  // namespace
}  // namespace nanochat::kernels
