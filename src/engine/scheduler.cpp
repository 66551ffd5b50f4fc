#include "nanochat/engine/scheduler.hpp"

#include <algorithm>

#include "nanochat/util/stats.hpp"
#include "nanochat/util/units.hpp"

namespace nanochat::engine {

using Clock = std::chrono::steady_clock;

namespace {
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
}  // namespace

void EventQueue::push(RequestEvent event) {
  {
    const std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

std::optional<RequestEvent> EventQueue::pop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  RequestEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

Request::Request(std::vector<model::TokenId> prompt, const GenerateOptions& options,
                 std::shared_ptr<EventQueue> events, int index)
    : prompt_(std::move(prompt)),
      options_(options),
      events_(std::move(events)),
      index_(index),
      submitted_(Clock::now()) {}

struct Scheduler::Slot {
  Slot(const model::ModelConfig& config, std::int64_t context) : cache(config, context) {}

  model::KvCache cache;
  std::vector<model::TokenId> cached;  // the tokens whose keys and values the cache holds
  std::shared_ptr<Request> request;    // running here, or null
  std::optional<Decoder> decoder;
  std::size_t prefilled = 0;           // prompt tokens in the cache
  std::optional<model::TokenId> next;  // sampled, to run in the next step
  Clock::time_point admitted, prefill_done, last_used;
  std::size_t batch_tokens = 0;  // tokens this slot put in the current pass
};

Scheduler::Scheduler(std::shared_ptr<LoadedModel> model, const SchedulerOptions& options)
    : model_(std::move(model)), options_(options) {
  if (options_.slots < 1 || options_.slots > 256) {
    fail_argument("slots", options_.slots, "must be between 1 and 256");
  }
  if (options_.max_waiting < 0) fail_argument("max_waiting", options_.max_waiting, "must be >= 0");
  if (options_.prefill_chunk < 1) {
    fail_argument("prefill_chunk", options_.prefill_chunk, "must be positive");
  }
  validate_context(options_.context);
  const model::ModelConfig& c = model_->config();
  context_ = model::KvCache::resolve_capacity(c, options_.context);
  // All slots' caches together, checked before any is made (each alone is checked by KvCache).
  const double bytes = model::KvCache::bytes_for(c, context_) * options_.slots;
  const double memory = model::KvCache::memory_limit();
  if (bytes > memory) {
    fail_argument("context", context_,
                  "{} slots of {} tokens would need {} of KV cache, more than this machine's "
                  "{}; use fewer slots or a smaller context",
                  options_.slots, context_, format_bytes(bytes), format_bytes(memory));
  }
  for (int i = 0; i < options_.slots; ++i) {
    slots_.push_back(std::make_unique<Slot>(c, context_));
  }
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    const std::lock_guard lock(mutex_);
    exit_ = true;
    stopping_ = true;
    for (auto& r : waiting_) r->cancel();
    for (auto& s : slots_) {
      if (s->request) s->request->cancel();
    }
  }
  wake_.notify_all();
  thread_.join();
}

std::shared_ptr<Request> Scheduler::submit(std::vector<model::TokenId> prompt,
                                           const GenerateOptions& options,
                                           std::shared_ptr<EventQueue> events, int index) {
  options.validate();
  if (prompt.empty()) fail_argument("prompt", "", "the prompt encodes to no tokens");
  if (static_cast<std::int64_t>(prompt.size()) >= context_) {
    fail_argument("context", context_,
                  "the prompt has {} tokens, which leaves no room to generate in a context of {}",
                  prompt.size(), context_);
  }
  std::shared_ptr<Request> r(new Request(std::move(prompt), options, std::move(events), index));
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) fail<ShuttingDown>("the server is shutting down");
    const auto busy = std::count_if(slots_.begin(), slots_.end(),
                                    [](const auto& s) { return s->request != nullptr; });
    const auto free_slots = static_cast<std::size_t>(options_.slots - busy);
    if (waiting_.size() >= free_slots + static_cast<std::size_t>(options_.max_waiting)) {
      fail<QueueFull>("all {} slots are busy and {} requests are waiting; try again later",
                      options_.slots, waiting_.size());
    }
    waiting_.push_back(r);
  }
  wake_.notify_all();
  return r;
}

void Scheduler::stop(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  stopping_ = true;
  const auto idle = [&] {
    return waiting_.empty() && std::none_of(slots_.begin(), slots_.end(),
                                            [](const auto& s) { return s->request != nullptr; });
  };
  if (!wake_.wait_until(lock, deadline, idle)) {
    for (auto& r : waiting_) r->cancel();
    for (auto& s : slots_) {
      if (s->request) s->request->cancel();
    }
    wake_.notify_all();
    wake_.wait(lock, idle);  // cancelled requests end within one step
  }
}

Scheduler::Stats Scheduler::stats() const {
  const std::lock_guard lock(mutex_);
  Stats s;
  s.slots = options_.slots;
  s.waiting = static_cast<int>(waiting_.size());
  for (const auto& slot : slots_) {
    if (slot->request) ++s.running;
    s.cached_tokens += slot->cache.length();
    s.capacity_tokens += slot->cache.capacity();
  }
  s.steps = steps_.load();
  return s;
}

void Scheduler::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    const auto busy = [&] {
      return std::any_of(slots_.begin(), slots_.end(),
                         [](const auto& s) { return s->request != nullptr; });
    };
    wake_.wait(lock, [&] { return exit_ || !waiting_.empty() || busy(); });
    if (exit_ && waiting_.empty() && !busy()) return;
    admit(lock);
    lock.unlock();
    step();
    lock.lock();
    wake_.notify_all();  // stop() waits for the slots to empty
  }
}

void Scheduler::admit(std::unique_lock<std::mutex>& /*lock held*/) {
  while (!waiting_.empty()) {
    std::shared_ptr<Request> r = waiting_.front();
    if (r->cancelled()) {
      waiting_.pop_front();
      RequestEvent e;
      e.index = r->index_;
      e.done = true;
      e.result.emplace().finish = FinishReason::kCancelled;
      e.result->timings.prompt_tokens = static_cast<std::int64_t>(r->prompt_.size());
      e.result->timings.queued_ms = ms_since(r->submitted_);
      r->events_->push(std::move(e));
      continue;
    }
    // The free slot whose cache shares the longest prefix with the prompt; else the one unused
    // longest (its cache is the least likely to be wanted again).
    Slot* best = nullptr;
    std::size_t best_common = 0;
    for (auto& s : slots_) {
      if (s->request) continue;
      std::size_t common = 0;
      while (common < s->cached.size() && common + 1 < r->prompt_.size() &&
             s->cached[common] == r->prompt_[common]) {
        ++common;
      }
      if (best == nullptr || common > best_common ||
          (common == best_common && s->last_used < best->last_used)) {
        best = s.get();
        best_common = common;
      }
    }
    if (best == nullptr) return;  // every slot is busy
    waiting_.pop_front();
    Slot& s = *best;
    s.request = r;
    s.cached.resize(best_common);
    s.cache.set_length(static_cast<std::int64_t>(best_common));
    s.prefilled = best_common;
    s.next.reset();
    s.decoder.emplace(*model_, r->prompt_, r->options_);
    s.admitted = Clock::now();
    Timings& t = s.decoder->result().timings;
    t.prompt_tokens = static_cast<std::int64_t>(r->prompt_.size());
    t.reused_tokens = static_cast<std::int64_t>(best_common);
    t.queued_ms = ms_since(r->submitted_);
  }
}

void Scheduler::finish(Slot& s) {
  GenerateResult& result = s.decoder->result();
  const Clock::time_point now = Clock::now();
  result.timings.generated_tokens = static_cast<std::int64_t>(result.tokens.size());
  if (s.prefilled == s.request->prompt_.size()) {
    result.timings.eval_ms =
        std::chrono::duration<double, std::milli>(now - s.prefill_done).count();
  }
  RequestEvent e;
  e.index = s.request->index_;
  e.done = true;
  e.result = std::move(result);
  s.request->events_->push(std::move(e));
  s.request.reset();
  s.decoder.reset();
  s.next.reset();
  s.last_used = now;
}

void Scheduler::step() {
  std::vector<model::Model::Segment> segments;
  std::vector<Slot*> batch;
  {
    const std::lock_guard lock(mutex_);
    for (auto& s : slots_) {
      if (s->request && s->request->cancelled()) {
        s->decoder->cancel();
        finish(*s);
      }
    }
    // Decoding slots first (one token each), then prompt chunks within the step's budget.
    for (auto& s : slots_) {
      if (!s->request || !s->next) continue;
      segments.push_back({std::span<const model::TokenId>(&*s->next, 1), &s->cache, false});
      s->batch_tokens = 1;
      batch.push_back(s.get());
    }
    std::size_t budget = static_cast<std::size_t>(options_.prefill_chunk);
    for (auto& s : slots_) {
      if (!s->request || s->next || budget == 0) continue;
      const std::vector<model::TokenId>& prompt = s->request->prompt_;
      const std::size_t n = std::min(prompt.size() - s->prefilled, budget);
      budget -= n;
      segments.push_back(
          {std::span<const model::TokenId>(prompt).subspan(s->prefilled, n), &s->cache, false});
      s->batch_tokens = n;
      batch.push_back(s.get());
    }
  }
  if (segments.empty()) return;

  std::string error;
  try {
    model_->forward_batch(segments, buffers_, logits_);
  } catch (const std::exception& e) {
    error = e.what();
  }
  steps_.fetch_add(1);

  const std::lock_guard lock(mutex_);
  const auto vocab = static_cast<std::size_t>(model_->config().vocab_size);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Slot& s = *batch[i];
    const Request& r = *s.request;
    if (!error.empty()) {
      // A pass that throws is a bug; the slot's cache is in an unknown state.
      RequestEvent e;
      e.index = r.index_;
      e.done = true;
      e.error = error;
      r.events_->push(std::move(e));
      s.request.reset();
      s.decoder.reset();
      s.next.reset();
      s.cached.clear();
      s.cache.clear();
      continue;
    }
    const model::Model::Segment& seg = segments[i];
    s.cached.insert(s.cached.end(), seg.tokens.begin(), seg.tokens.end());
    if (!s.next) {
      s.prefilled += s.batch_tokens;
      if (s.prefilled < r.prompt_.size()) continue;  // more of the prompt to read
      s.prefill_done = Clock::now();
      s.decoder->result().timings.prompt_ms =
          std::chrono::duration<double, std::milli>(s.prefill_done - s.admitted).count();
    }
    RequestEvent e;
    e.index = r.index_;
    const auto on_text = [&](std::string_view text) {
      e.text += text;
      return true;
    };
    GenerateResult& result = s.decoder->result();
    const std::size_t logprobs_before = result.logprobs.size();
    const std::size_t tokens_before = result.tokens.size();
    s.next = s.decoder->step(std::span<const float>(logits_).subspan(i * vocab, vocab),
                             s.cache.length() < s.cache.capacity(), on_text);
    if (tokens_before == 0 && !result.tokens.empty()) {
      result.timings.first_token_ms = ms_since(r.submitted_);
    }
    e.logprobs.assign(result.logprobs.begin() + static_cast<std::ptrdiff_t>(logprobs_before),
                      result.logprobs.end());
    if (!e.text.empty() || !e.logprobs.empty()) r.events_->push(std::move(e));
    if (!s.next) finish(s);
  }
}

}  // namespace nanochat::engine
