#include "nanochat/model/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <utility>

#include "nanochat/util/error.hpp"

namespace nanochat::model {

void SamplerParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0) {
    fail_argument("temperature", temperature, "must be 0 (greedy) or a positive number");
  }
  if (top_k < 0) fail_argument("top_k", top_k, "must be 0 (off) or positive");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    fail_argument("top_p", top_p, "must be in (0, 1]; 1 turns it off");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    fail_argument("min_p", min_p, "must be in [0, 1]; 0 turns it off");
  }
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty)) {
    fail_argument("repeat_penalty", repeat_penalty, "must be positive; 1 turns it off");
  }
  for (const auto& [name, value] : {std::pair{"presence_penalty", presence_penalty},
                                    {"frequency_penalty", frequency_penalty}}) {
    if (!(value >= -2.0f && value <= 2.0f)) fail_argument(name, value, "must be in [-2, 2]");
  }
  if (repeat_last_n < -1) {
    fail_argument("repeat_last_n", repeat_last_n,
                  "must be -1 (whole context), 0 (off) or positive");
  }
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
  if (logits.empty()) fail("cannot sample from an empty vocabulary");
  const auto n = logits.size();

  // Penalties over the recent tokens: repetition once per distinct token (as llama.cpp applies
  // it), presence once, frequency per occurrence.
  std::span<const float> work = logits;
  const bool penalize = params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                        params_.frequency_penalty != 0.0f;
  if (penalize && params_.repeat_last_n != 0 && !history.empty()) {
    penalized_.assign(logits.begin(), logits.end());
    const std::size_t window =
        params_.repeat_last_n < 0
            ? history.size()
            : std::min(history.size(), static_cast<std::size_t>(params_.repeat_last_n));
    std::unordered_map<TokenId, int> counts;
    for (std::size_t i = history.size() - window; i < history.size(); ++i) {
      const TokenId t = history[i];
      if (t >= 0 && static_cast<std::size_t>(t) < n) ++counts[t];
    }
    for (const auto& [t, count] : counts) {
      float& l = penalized_[static_cast<std::size_t>(t)];
      l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
      l -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
    work = penalized_;
  }

  // Higher logit first; equal logits: lower id first.
  auto better = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  candidates_.resize(n);
  for (std::size_t i = 0; i < n; ++i) candidates_[i] = {static_cast<TokenId>(i), work[i]};

  if (params_.temperature <= 0.0f) {
    return std::min_element(candidates_.begin(), candidates_.end(), better)->id;
  }

  std::size_t keep = n;
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < n) {
    keep = static_cast<std::size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep),
                      candidates_.end(), better);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), better);
  }

  // Probabilities at temperature 1 for top-p (llama.cpp applies temperature last).
  const float top = candidates_[0].logit;
  std::vector<double> probs(keep);
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(candidates_[i].logit - top));
    sum += probs[i];
  }
  if (params_.top_p < 1.0f) {
    double cumulative = 0;
    for (std::size_t i = 0; i < keep; ++i) {
      cumulative += probs[i] / sum;
      if (cumulative >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
    const float threshold = top + std::log(params_.min_p);
    std::size_t kept = 1;
    while (kept < keep && candidates_[kept].logit >= threshold) ++kept;
    keep = kept;
  }

  // Temperature, softmax, draw.
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  sum = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(candidates_[i].logit - top) * inv_t);
    sum += probs[i];
  }
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * sum;
  double cumulative = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (u < cumulative) return candidates_[i].id;
  }
  return candidates_[keep - 1].id;
}

}  // namespace nanochat::model
