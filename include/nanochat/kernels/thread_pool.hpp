// A persistent pool of worker threads for data-parallel kernels. run() hands every thread the
// same function with its index; the calling thread takes index 0, so a pool of N threads starts
// N - 1 workers. Workers spin briefly after each job (decode issues many small jobs back to back;
// the spin yields the core only when the pool has more threads than CPUs to run them)
// and then sleep on a futex, so an idle pool costs no CPU.
//
// Thread-safety: run() must not be called concurrently or from inside a job.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nanochat::kernels {

class ThreadPool {
 public:
  // threads >= 1 (the caller included).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs job(i) for every i in [0, size()) and returns when all have finished. The first
  // exception thrown by any job is rethrown here.
  void run(const std::function<void(int)>& job);

  // Splits [0, n) into size() contiguous ranges (as equal as possible) and runs
  // job(begin, end) on each non-empty one. A template, and the job handed to run() captures one
  // reference, which fits std::function's inline storage: a call allocates nothing.
  template <typename Job>
  void parallel_for(std::int64_t n, const Job& job) {
    const struct {
      std::int64_t n, parts;
      const Job& job;
    } range{n, size(), job};
    run([&range](int i) {
      const std::int64_t begin = range.n * i / range.parts;
      const std::int64_t end = range.n * (i + 1) / range.parts;
      if (begin < end) range.job(begin, end);
    });
  }

 private:
  void worker_loop(int index);
  void run_job(int index);

  std::vector<std::thread> workers_;
  bool oversubscribed_;  // more threads than CPUs to run them: spin-waits yield
  const std::function<void(int)>* job_ = nullptr;
  // 32-bit so that wait/notify map straight onto a futex. Wrap-around is harmless: workers only
  // compare for inequality with the generation they last ran.
  std::atomic<std::uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleeping_workers_{0};  // skip the futex wake while every worker spins
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// Threads to use by default: the physical core count.
int default_thread_count();

// The most threads a pool may have here: 8 per CPU this process may run on, at least 16. More
// threads than CPUs only slow the kernels down (each hand-off waits for a thread that is not
// running); thousands took seconds a token instead of failing.
int max_thread_count();

// The CPUs this process may run on (its affinity mask, as taskset sets it).
int usable_cpu_count();

}  // namespace nanochat::kernels
