// Continuous batching: many generations over one LoadedModel, decoded together. The server and
// the Python module's generate_batch run requests through this.
//
// A fixed number of slots each hold a KV cache. Every step runs one batched pass
// (Model::forward_batch) of every active slot: one token for each slot that is decoding and a
// chunk of the prompt for each that is still prefilling, so running streams keep flowing while
// a new prompt is read. Requests wait in a bounded queue for a free slot and join between steps;
// finished and cancelled ones leave at once. A new request goes to the free slot whose cached
// tokens share the longest prefix with its prompt (a chat's next turn), and only the rest of the
// prompt runs. Each row of a batched pass is computed exactly as it would be alone, so a request
// gives the same tokens whatever runs beside it (same seed, same text).
//
//   engine::Scheduler scheduler(model, {.slots = 4});
//   auto events = std::make_shared<engine::EventQueue>();
//   auto request = scheduler.submit(prompt_tokens, options, events);
//   while (auto e = events->pop(std::chrono::milliseconds(100))) { ... e->text ... if (e->done)
//   break; }
//
// Thread-safety: submit(), cancel() and stats() may be called from any thread; events are pushed
// from the scheduler's own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::engine {

struct SchedulerOptions {
  int slots = 4;             // sequences decoded together (-np)
  std::int64_t context = 0;  // KV cache per slot in tokens; 0: the model's context length
  int max_waiting = 64;      // requests queued for a slot; more are refused (QueueFull)
  int prefill_chunk = 256;   // prompt tokens run per step, shared by the prefilling slots
};

// What a request reports, in order: text as it is generated (with its tokens' log-probabilities
// when asked), then one final event with the whole result (or an error).
struct RequestEvent {
  int index = 0;  // the request's index, as given to submit() (several requests share a queue)
  std::string text;
  std::vector<TokenLogprob> logprobs;
  bool done = false;
  std::optional<GenerateResult> result;  // when done (absent with an error)
  std::string error;                     // when done with an error (a bug: the pass threw)
};

// Events of one or more requests, for the thread that waits on them.
class EventQueue {
 public:
  void push(RequestEvent event);
  // The next event, or nullopt after `timeout` without one.
  std::optional<RequestEvent> pop(std::chrono::milliseconds timeout);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestEvent> events_;
};

// Refused because the queue is full; try again later.
class QueueFull : public Error {
 public:
  using Error::Error;
};
// Refused because the scheduler is stopping.
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

class Request;

class Scheduler {
 public:
  // Throws InvalidArgument ("slots", "context", "max_waiting", "prefill_chunk") for bad options
  // and when the slots' caches would not fit in memory.
  Scheduler(std::shared_ptr<LoadedModel> model, const SchedulerOptions& options);
  ~Scheduler();  // cancels what is still running
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a generation of `prompt`; its events go to `events` tagged with `index`. Throws
  // InvalidArgument for bad options or a prompt that leaves no room in a slot's context,
  // QueueFull when max_waiting requests already wait, ShuttingDown after stop().
  std::shared_ptr<Request> submit(std::vector<model::TokenId> prompt,
                                  const GenerateOptions& options,
                                  std::shared_ptr<EventQueue> events, int index = 0);

  // Stops taking requests; lets those admitted finish until `deadline`, then cancels the rest.
  // Returns when nothing is left.
  void stop(std::chrono::steady_clock::time_point deadline);

  struct Stats {
    int slots = 0;
    int running = 0;                 // requests in a slot
    int waiting = 0;                 // requests queued for one
    std::int64_t cached_tokens = 0;  // tokens the slots' caches hold (running or kept for reuse)
    std::int64_t capacity_tokens = 0;
    std::int64_t steps = 0;  // batched passes run
  };
  Stats stats() const;
  std::int64_t context() const { return context_; }
  const std::shared_ptr<LoadedModel>& model() const { return model_; }

 private:
  struct Slot;
  void run();
  void admit(std::unique_lock<std::mutex>& lock);
  void step();
  void finish(Slot& slot);

  std::shared_ptr<LoadedModel> model_;
  SchedulerOptions options_;
  std::int64_t context_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::deque<std::shared_ptr<Request>> waiting_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false, exit_ = false;
  std::atomic<std::int64_t> steps_{0};
  model::ForwardBuffers buffers_;
  std::vector<float> logits_;
  std::thread thread_;
};

// A submitted request: cancel it, or read its timings once done.
class Request {
 public:
  // Ends the generation within one step (a final event with FinishReason::kCancelled follows).
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Scheduler;
  Request(std::vector<model::TokenId> prompt, const GenerateOptions& options,
          std::shared_ptr<EventQueue> events, int index);

  std::vector<model::TokenId> prompt_;
  GenerateOptions options_;
  std::shared_ptr<EventQueue> events_;
  int index_;
  std::atomic<bool> cancelled_{false};
  std::chrono::steady_clock::time_point submitted_;
};

}  // namespace nanochat::engine
