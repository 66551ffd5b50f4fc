// The server's Prometheus metrics, written in the text exposition format (version 0.0.4) that
// Prometheus scrapes from /metrics. Debian 12 packages no Prometheus C++ client, so the few
// metric kinds the server needs are here: counters with labels, histograms, and gauges read at
// scrape time.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace nanochat::serve {

// A histogram with fixed upper bounds (Prometheus's cumulative buckets are made at render time).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends `name`'s _bucket, _sum and _count lines.
  void render(std::string& out, std::string_view name) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

struct GaugeValues {
  double requests_running = 0, requests_waiting = 0;
  double slots = 0, slots_busy = 0;
  double kv_cache_tokens = 0, kv_cache_capacity_tokens = 0;
  double batch_steps = 0;
  double model_loaded = 0;  // 1 once the model is ready
  double model_load_seconds = 0;
};

class Metrics {
 public:
  Metrics();
  // One answered request: its endpoint ("/v1/completions", ...; others count as "other") and
  // HTTP status.
  void count_request(std::string_view endpoint, int status);
  // One finished generation (a choice): tokens and timings in seconds; first_token and
  // per_output_token are skipped when negative (nothing was generated).
  void observe_generation(std::int64_t prompt_tokens, std::int64_t generated_tokens,
                          double queue_seconds, double first_token_seconds,
                          double per_output_token_seconds, double request_seconds);
  // The whole page. `build` labels the build-info gauge (version, ISA, model).
  std::string render(const GaugeValues& gauges,
                     const std::map<std::string, std::string>& build) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  std::uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, generations_ = 0;
  Histogram queue_, first_token_, per_output_token_, request_;
};

// A label value escaped as the text format requires (backslash, quote, newline).
std::string escape_label(std::string_view value);

}  // namespace nanochat::serve
