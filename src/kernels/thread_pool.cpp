#include "nanochat/kernels/thread_pool.hpp"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>

#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {
namespace {
// ~50-100 us of spinning before a worker sleeps: longer than the gap between two GEMV calls of
// one decode step, far shorter than anything a user would notice on an idle machine.
constexpr int kSpinIterations = 1 << 14;

// One step of a spin-wait. In a pool larger than the CPUs it may run on (-t above the core
// count) every 128th step yields the core, so that the thread being waited for can run; otherwise
// it never does: a yield is a system call, and on a paravirtualized machine one costs several
// microseconds during which a decode step's next job waits (a 2-thread pool decoding a small
// model ran at half the speed of one thread).
inline void spin_pause(int iteration, bool yield) {
  if (yield && (iteration & 127) == 127) {
    std::this_thread::yield();
  } else {
    _mm_pause();
  }
}

// The CPUs this process may run on (its affinity mask, as taskset sets it).
int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}
}  // namespace

ThreadPool::ThreadPool(int threads) : oversubscribed_(threads > usable_cpus()) {
  if (threads < 1) fail<UsageError>("a thread pool needs at least 1 thread, got {}", threads);
  if (threads > max_thread_count()) {
    fail<UsageError>("{} threads: at most {} on this machine ({} CPUs to run on)", threads,
                     max_thread_count(), usable_cpus());
  }
  workers_.reserve(static_cast<std::size_t>(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_job(int index) {
  try {
    (*job_)(index);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::worker_loop(int index) {
  std::uint32_t seen = 0;
  for (;;) {
    std::uint32_t now = generation_.load(std::memory_order_acquire);
    for (int spin = 0; now == seen && spin < kSpinIterations; ++spin) {
      spin_pause(spin, oversubscribed_);
      now = generation_.load(std::memory_order_acquire);
    }
    if (now == seen) {
      // seq_cst pairs with run(): either run() sees this worker asleep and wakes it, or this
      // worker's wait() sees the new generation and does not sleep.
      sleeping_workers_.fetch_add(1);
      while ((now = generation_.load()) == seen) generation_.wait(seen);
      sleeping_workers_.fetch_sub(1);
    }
    seen = now;
    if (stop_.load(std::memory_order_acquire)) return;
    run_job(index);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) pending_.notify_one();
  }
}

void ThreadPool::run(const std::function<void(int)>& job) {
  job_ = &job;
  error_ = nullptr;
  if (!workers_.empty()) {
    pending_.store(static_cast<int>(workers_.size()));
    generation_.fetch_add(1);
    if (sleeping_workers_.load() > 0) generation_.notify_all();
  }
  run_job(0);
  if (!workers_.empty()) {
    int left = pending_.load(std::memory_order_acquire);
    for (int spin = 0; left != 0 && spin < kSpinIterations; ++spin) {
      spin_pause(spin, oversubscribed_);
      left = pending_.load(std::memory_order_acquire);
    }
    if (left != 0) {
      caller_sleeping_.store(true);
      while ((left = pending_.load()) != 0) pending_.wait(left);
      caller_sleeping_.store(false);
    }
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

int default_thread_count() { return cpu_info().physical_cores; }

int max_thread_count() { return std::max(16, 8 * usable_cpus()); }

int usable_cpu_count() { return usable_cpus(); }

}  // namespace nanochat::kernels
