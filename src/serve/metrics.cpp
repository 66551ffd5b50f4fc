#include "nanochat/serve/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>

namespace nanochat::serve {
namespace {

// Seconds, from a fast token (a millisecond) to a long request (ten minutes).
std::vector<double> latency_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120, 300,  600};
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// Prometheus's float syntax: +Inf, -Inf, NaN, else the shortest exact decimal.
std::string number(double v) {
  if (v != v) return "NaN";
  if (v == std::numeric_limits<double>::infinity()) return "+Inf";
  if (v == -std::numeric_limits<double>::infinity()) return "-Inf";
  return fmt::format("{}", v);
}

const std::array<std::string_view, 6> kEndpoints = {
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "other"};

}  // namespace

std::string escape_label(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const auto at = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[static_cast<std::size_t>(at)];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name) const {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    fmt::format_to(std::back_inserter(out), "{}_bucket{{le=\"{}\"}} {}\n", name, le, cumulative);
  }
  fmt::format_to(std::back_inserter(out), "{}_sum {}\n{}_count {}\n", name, number(sum_), name,
                 count_);
}

Metrics::Metrics()
    : queue_(latency_bounds()),
      first_token_(latency_bounds()),
      per_output_token_(latency_bounds()),
      request_(latency_bounds()) {}

void Metrics::count_request(std::string_view endpoint, int status) {
  const bool known = std::find(kEndpoints.begin(), kEndpoints.end(), endpoint) != kEndpoints.end();
  const std::lock_guard lock(mutex_);
  ++requests_[{std::string(known ? endpoint : "other"), status}];
}

void Metrics::observe_generation(std::int64_t prompt_tokens, std::int64_t generated_tokens,
                                 double queue_seconds, double first_token_seconds,
                                 double per_output_token_seconds, double request_seconds) {
  const std::lock_guard lock(mutex_);
  prompt_tokens_ += static_cast<std::uint64_t>(std::max<std::int64_t>(0, prompt_tokens));
  generated_tokens_ += static_cast<std::uint64_t>(std::max<std::int64_t>(0, generated_tokens));
  ++generations_;
  queue_.observe(queue_seconds);
  if (first_token_seconds >= 0) first_token_.observe(first_token_seconds);
  if (per_output_token_seconds >= 0) per_output_token_.observe(per_output_token_seconds);
  request_.observe(request_seconds);
}

std::string Metrics::render(const GaugeValues& g,
                            const std::map<std::string, std::string>& build) const {
  std::string out;
  const auto it = std::back_inserter(out);
  header(out, "nanochat_build_info", "gauge", "Always 1; the labels describe the build and model.");
  out += "nanochat_build_info{";
  bool first = true;
  for (const auto& [key, value] : build) {
    fmt::format_to(it, "{}{}=\"{}\"", first ? "" : ",", key, escape_label(value));
    first = false;
  }
  out += "} 1\n";
  const auto gauge = [&](std::string_view name, std::string_view help, double v) {
    header(out, name, "gauge", help);
    fmt::format_to(it, "{} {}\n", name, number(v));
  };
  gauge("nanochat_model_loaded", "1 once the model is loaded and requests are served.",
        g.model_loaded);
  gauge("nanochat_model_load_seconds", "Time the model took to load.", g.model_load_seconds);
  gauge("nanochat_requests_running", "Generations in a slot.", g.requests_running);
  gauge("nanochat_requests_waiting", "Generations queued for a free slot.", g.requests_waiting);
  gauge("nanochat_slots", "Slots: generations decoded together (-np).", g.slots);
  gauge("nanochat_slots_busy", "Slots running a generation.", g.slots_busy);
  gauge("nanochat_kv_cache_tokens", "Tokens held in the slots' KV caches.", g.kv_cache_tokens);
  gauge("nanochat_kv_cache_capacity_tokens", "Tokens the slots' KV caches can hold.",
        g.kv_cache_capacity_tokens);
  gauge("nanochat_kv_cache_usage_ratio", "Share of the KV cache in use, 0 to 1.",
        g.kv_cache_capacity_tokens > 0 ? g.kv_cache_tokens / g.kv_cache_capacity_tokens : 0.0);

  const std::lock_guard lock(mutex_);
  header(out, "nanochat_batch_steps_total", "counter", "Batched forward passes run.");
  fmt::format_to(it, "nanochat_batch_steps_total {}\n", number(g.batch_steps));
  header(out, "nanochat_http_requests_total", "counter",
         "HTTP requests answered, by endpoint and status code.");
  for (const auto& [key, count] : requests_) {
    fmt::format_to(it, "nanochat_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n",
                   escape_label(key.first), key.second, count);
  }
  header(out, "nanochat_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
  fmt::format_to(it, "nanochat_prompt_tokens_total {}\n", prompt_tokens_);
  header(out, "nanochat_generation_tokens_total", "counter", "Tokens generated.");
  fmt::format_to(it, "nanochat_generation_tokens_total {}\n", generated_tokens_);
  header(out, "nanochat_generations_total", "counter", "Generations finished (one per choice).");
  fmt::format_to(it, "nanochat_generations_total {}\n", generations_);
  const auto histogram = [&](const Histogram& h, std::string_view name, std::string_view help) {
    header(out, name, "histogram", help);
    h.render(out, name);
  };
  histogram(queue_, "nanochat_queue_wait_seconds", "Time a generation waited for a slot.");
  histogram(first_token_, "nanochat_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.");
  histogram(per_output_token_, "nanochat_time_per_output_token_seconds",
            "Mean time between generated tokens after the first, per generation.");
  histogram(request_, "nanochat_request_duration_seconds",
            "Time from a request's arrival to its last token (end to end).");
  return out;
}

}  // namespace nanochat::serve
