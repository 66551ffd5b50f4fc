#include "nanochat/kernels/autotune.hpp"

#include <fmt/format.h>
#include <immintrin.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/isa_units.hpp"
#include "nanochat/kernels/membw.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/log.hpp"
#include "nanochat/util/random.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat::kernels {
namespace {

// 2 added the batch class 32+ and variants; 3 times one-token plans with the weights in memory;
// 4 added layouts.
constexpr int kCacheVersion = 4;
constexpr const char* kCacheFormat = "nanochat-autotune";
constexpr int kSamples = 7;
constexpr double kMinSampleSeconds = 200e-6;

// Matrices far past the last-level cache are tuned on a slice that is still well past it: the
// winner depends on where the bytes come from, not on how many there are.
std::int64_t tuning_rows(std::int64_t rows, std::int64_t cols) {
  const std::size_t l3 = cpu_info().l3_bytes ? cpu_info().l3_bytes : (std::size_t{32} << 20);
  const std::size_t cap_bytes = std::max<std::size_t>(8 * l3, std::size_t{256} << 20);
  const auto cap_rows = static_cast<std::int64_t>(cap_bytes * 4 / static_cast<std::size_t>(cols));
  return std::min(rows, std::max<std::int64_t>(cap_rows, 64));
}

// Calls per sample of a one-token plan timed with its weights evicted before each call.
constexpr int kStreamedCalls = 4;

// Whether one-token candidates are timed with their weights evicted from the caches before each
// call: decoding streams every layer's weights from memory once per token (the model is far
// larger than the caches), and a plan timed on a matrix that stays in the cache can lose there
// (Zen 4: the AVX-512 kernel's plan fastest in cache reached 56-62% of read bandwidth streamed,
// the AVX2 one 70%). A matrix already past the cache streams by itself. Decided once per shape
// (from its 2-bit codes), so every candidate is timed the same way.
bool time_streamed(std::int64_t rows, std::int64_t cols) {
  const std::size_t l3 = cpu_info().l3_bytes ? cpu_info().l3_bytes : (std::size_t{32} << 20);
  return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) / 4 <= 2 * l3;
}

// Writes back and drops every cache line of the matrix's codes and scales, on every thread of
// the pool (which also leaves its workers awake for the timed call, as decoding keeps them).
void evict(const PackedMatrix& w, ThreadPool& pool) {
  constexpr std::int64_t kLine = 64;
  const auto lines = static_cast<std::int64_t>(w.codes.bytes()) / kLine;
  const auto* codes = reinterpret_cast<const char*>(w.codes.data());
  pool.parallel_for(lines, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) _mm_clflush(codes + i * kLine);
    _mm_mfence();
  });
  const auto* scales = reinterpret_cast<const char*>(w.row_scales.data());
  for (std::size_t off = 0; off < w.row_scales.size() * sizeof(float); off += kLine) {
    _mm_clflush(scales + off);
  }
  _mm_mfence();
}

// Calls per timed sample so that one sample lasts at least kMinSampleSeconds.
int calibrate_calls(const PackedMatrix& w, const PackedActivations& x, int token_block,
                    ThreadPool& pool, std::vector<std::int32_t>& y) {
  run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));  // warm up
  int calls = 1;
  for (;;) {
    const double start = now_seconds();
    for (int i = 0; i < calls; ++i) {
      run_gemm_i32(w, x, token_block, pool, y.data(), static_cast<std::size_t>(w.rows));
    }
    if (now_seconds() - start >= kMinSampleSeconds || calls >= (1 << 20)) return calls;
    calls *= 2;
  }
}

}  // namespace

TuneMode parse_tune_mode(std::string_view text) {
  if (text == "on") return TuneMode::kOn;
  if (text == "off") return TuneMode::kOff;
  if (text == "force") return TuneMode::kForce;
  fail<UsageError>("--autotune: '{}' is not a mode; use on, off or force", text);
}

const char* tune_mode_name(TuneMode mode) {
  switch (mode) {
    case TuneMode::kOn:
      return "on";
    case TuneMode::kOff:
      return "off";
    case TuneMode::kForce:
      return "force";
  }
  return "?";
}

std::int64_t batch_class(std::int64_t batch) {
  if (batch <= 1) return 1;
  if (batch < 4) return 2;
  if (batch < 8) return 4;
  if (batch < 32) return 8;
  return 32;
}

Autotuner::Autotuner(TuneMode mode, std::filesystem::path cache_file)
    : mode_(mode), cache_file_(std::move(cache_file)) {
  // force re-measures what this run needs but keeps (and saves back) every other cached plan.
  if (mode_ != TuneMode::kOff) load_cache();
}

std::filesystem::path Autotuner::default_cache_file() {
  // Plans measured with an optional instruction set switched off (NANOCHAT_NO_GFNI,
  // NANOCHAT_NO_AVX_VNNI, NANOCHAT_NO_VBMI) go to a file of their own: they would otherwise name a
  // variant this run cannot use, or replace the plans measured with it.
  const CpuFeatures& f = cpu_info().features;
  const bool gfni_off = unit_supported(isa_units::k_avx512_gfni, f) && !avx512_uses_gfni();
  const bool vnni_off = unit_supported(isa_units::k_avx2_vnni, f) && !avx2_uses_avx_vnni();
  const bool vbmi_off = unit_supported(isa_units::k_avx512_vbmi, f) && !avx512_uses_vbmi();
  const std::string off = std::string(gfni_off ? "-nogfni" : "") + (vnni_off ? "-noavxvnni" : "") +
                          (vbmi_off ? "-novbmi" : "");
  return cache_dir() / fmt::format("autotune-{}{}.json", cpu_info().signature(), off);
}

std::size_t Autotuner::known_plans() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.size();
}

std::string Autotuner::key_of(const PlanRequest& r, int threads) {
  return fmt::format("{}x{}/b{}/t{}/{}/r{}/{}", r.rows, r.cols, batch_class(r.batch), threads,
                     r.isa ? isa_name(*r.isa) : "any",
                     r.tile_rows ? std::to_string(r.tile_rows) : std::string("any"),
                     r.layout ? layout_name(*r.layout) : "any");
}

Plan Autotuner::default_plan(const PlanRequest& r) {
  Plan p;
  p.isa = r.isa ? *r.isa : available_isas().front();
  if (!r.isa && r.layout) {  // the fastest path that multiplies the forced layout
    for (Isa isa : available_isas()) {
      if (kernel_has_layout(isa, *r.layout)) {
        p.isa = isa;
        break;
      }
    }
  }
  const KernelInfo& k = kernel_info(p.isa);
  p.layout = r.layout ? *r.layout : k.layout;
  const int want_rows = r.tile_rows ? r.tile_rows : 4;
  p.tile_rows = std::find(k.tile_rows.begin(), k.tile_rows.end(), want_rows) != k.tile_rows.end()
                    ? want_rows
                    : k.tile_rows.back();
  p.token_block = r.batch > 1 ? k.token_blocks.back() : 1;
  p.variant = r.batch > 1 || p.layout == Layout::kBase3 ? 0 : k.variants() - 1;
  p.source = "default";
  return p;
}

std::optional<Plan> Autotuner::cached_plan(const PlanRequest& request, int threads) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = plans_.find(key_of(request, threads)); it != plans_.end()) return it->second;
  return std::nullopt;
}

Plan Autotuner::plan(const PlanRequest& request, ThreadPool& pool) {
  if (request.rows <= 0 || request.cols <= 0 || request.batch <= 0) {
    fail("cannot plan a GEMM of {}x{} with batch {}", request.rows, request.cols, request.batch);
  }
  if (mode_ == TuneMode::kOff) return default_plan(request);
  const std::string key = key_of(request, pool.size());
  std::lock_guard<std::mutex> lock(mutex_);
  if (mode_ == TuneMode::kForce) {
    if (auto it = measured_this_run_.find(key); it != measured_this_run_.end()) return it->second;
  } else if (auto it = plans_.find(key); it != plans_.end()) {
    return it->second;
  }
  // Tuning a large model takes seconds on its first run: say so once, so nobody thinks it hangs.
  static std::atomic<bool> announced{false};
  if (!announced.exchange(true)) {
    notice(
        "autotune: timing the kernels on this CPU, under a second per matrix shape (once per "
        "shape; kept in {})",
        cache_file_.empty() ? std::string("memory") : cache_file_.string());
  }
  spdlog::info("autotune: measuring {}", key);
  Plan best = measure(request, pool);
  plans_[key] = best;
  measured_this_run_[key] = best;
  try {
    save_cache();
  } catch (const Error& e) {
    spdlog::warn("autotune: could not save the cache ({}); plans will be measured again next run",
                 e.what());
  }
  return best;
}

namespace {

// Whether the candidates' layouts store weights at different densities (bits per weight): only
// then do bytes decide between them.
template <typename Candidates>
bool several_densities(const Candidates& candidates) {
  return std::any_of(candidates.begin(), candidates.end(), [&](const auto& c) {
    return layout_unit_weights(c.plan.layout) !=
           layout_unit_weights(candidates.front().plan.layout);
  });
}

}  // namespace

Plan Autotuner::measure(const PlanRequest& request, ThreadPool& pool) const {
  std::vector<Isa> isas;
  if (request.isa) {
    isas.push_back(*request.isa);
  } else {
    for (Isa isa : available_isas()) {
      // The scalar path is the reference; it is a candidate only where nothing else runs.
      if (isa != Isa::kScalar || available_isas().size() == 1) isas.push_back(isa);
    }
  }
  const std::int64_t rows = tuning_rows(request.rows, request.cols);
  const std::int64_t tokens = batch_class(request.batch);

  XorShift64 rng{0x9e3779b97f4a7c15ull};
  std::vector<std::int8_t> act(static_cast<std::size_t>(tokens * request.cols));
  for (auto& v : act) v = static_cast<std::int8_t>(static_cast<int>(rng.next() % 255) - 127);
  PackedActivations x;
  pack_activations_i8(act.data(), tokens, request.cols, x);
  std::vector<std::int32_t> y(static_cast<std::size_t>(tokens * rows));

  // Every candidate is packed first, then timed round-robin: one sample of each in turn, so
  // that drift in what the machine gives us (other tenants, memory bandwidth) hits all
  // candidates alike instead of deciding the winner.
  struct Candidate {
    Plan plan;
    PackedMatrix* w;
    int calls = 1;
    std::vector<double> samples;
  };
  std::vector<std::unique_ptr<PackedMatrix>> matrices;
  std::vector<Candidate> candidates;
  for (Isa isa : isas) {
    const KernelInfo& k = kernel_info(isa);
    for (Layout layout : kernel_layouts(isa)) {
      if (request.layout && layout != *request.layout) continue;
      for (int tile_rows : k.tile_rows) {
        if (request.tile_rows != 0 && tile_rows != request.tile_rows) continue;
        XorShift64 wrng{0x2545f4914f6cdd1dull};
        matrices.push_back(std::make_unique<PackedMatrix>(pack_matrix(
            rows, request.cols,
            [&](std::int64_t, std::span<std::int8_t> trits) {
              for (auto& t : trits)
                t = static_cast<std::int8_t>(static_cast<int>(wrng.next() % 3) - 1);
            },
            isa, tile_rows, -1, layout)));
        for (int token_block : k.token_blocks) {
          if (token_block > tokens) continue;
          // Unpacking variants matter for single-token passes of the 2-bit layouts; batches and
          // kBase3 have one way.
          const int variants = tokens == 1 && layout != Layout::kBase3 ? k.variants() : 1;
          for (int variant = 0; variant < variants; ++variant) {
            candidates.push_back(
                Candidate{Plan{isa, layout, tile_rows, token_block, variant, 0, "measured"},
                          matrices.back().get(),
                          1,
                          {}});
          }
        }
      }
    }
  }
  if (candidates.empty()) return default_plan(request);
  for (Candidate& c : candidates) {
    c.w->variant = c.plan.variant;
    c.plan.weights_streamed = tokens == 1 && time_streamed(rows, request.cols);
    c.calls = c.plan.weights_streamed ? kStreamedCalls
                                      : calibrate_calls(*c.w, x, c.plan.token_block, pool, y);
  }
  // A one-token plan cannot stream faster than the machine's sustained read bandwidth, which a
  // matrix timed alone right after its eviction can beat (on a Zen 5 VM: 44 GB/s for the 2B
  // model's 2560x2560 against 29 GB/s streaming 256 MiB, and 23-25 GB/s decoding the whole model).
  // Where layouts of different sizes compete, each streamed candidate is charged at least its
  // bytes over that bandwidth, so the layout reading fewer bytes wins unless its unpacking is the
  // slower part.
  double floor_gbps = 0;
  const bool densities_differ = several_densities(candidates);
  if (densities_differ && tokens == 1 && time_streamed(rows, request.cols)) {
    auto it = read_gbps_.find(pool.size());
    if (it == read_gbps_.end()) {
      BandwidthProbe probe;
      const double gbps = measure_read_bandwidth(pool, isas.front(), probe, 5).median_gbps;
      it = read_gbps_.emplace(pool.size(), gbps).first;
      spdlog::info("autotune: sustained read bandwidth at {} thread{}: {:.1f} GB/s", pool.size(),
                   pool.size() == 1 ? "" : "s", gbps);
    }
    floor_gbps = it->second;
  }
  for (int sample = 0; sample < kSamples; ++sample) {
    for (Candidate& c : candidates) {
      c.w->variant = c.plan.variant;
      if (c.plan.weights_streamed) {
        double seconds = 0;
        for (int i = 0; i < c.calls; ++i) {
          evict(*c.w, pool);
          const double start = now_seconds();
          run_gemm_i32(*c.w, x, c.plan.token_block, pool, y.data(), static_cast<std::size_t>(rows));
          seconds += now_seconds() - start;
        }
        c.samples.push_back(seconds / c.calls);
        continue;
      }
      const double start = now_seconds();
      for (int i = 0; i < c.calls; ++i) {
        run_gemm_i32(*c.w, x, c.plan.token_block, pool, y.data(), static_cast<std::size_t>(rows));
      }
      c.samples.push_back((now_seconds() - start) / c.calls);
    }
  }
  const Candidate* best = nullptr;
  for (Candidate& c : candidates) {
    c.plan.ns_per_call = summarize(c.samples).median * 1e9;
    if (floor_gbps > 0) {
      c.plan.ns_per_call =
          std::max(c.plan.ns_per_call, static_cast<double>(c.w->weight_bytes()) / floor_gbps);
    }
    spdlog::debug("autotune:   {} {} r{} nb{} {}: {:.1f} us", kernel_info(c.plan.isa).name,
                  layout_name(c.plan.layout), c.plan.tile_rows, c.plan.token_block,
                  kernel_info(c.plan.isa).variant_name(c.plan.variant), c.plan.ns_per_call / 1e3);
    if (best == nullptr || c.plan.ns_per_call < best->plan.ns_per_call) best = &c;
  }
  // A one-token plan also fixes the matrix's layout, which prefill and training then use with
  // many tokens. One token is bound by memory, so tilings often tie within the machine's noise:
  // among those of the fastest's layout within layout_tie of it, take the tallest tile (the most
  // rows share each activation load when many tokens come) and its fastest variant. (A layout
  // that reads fewer bytes wins on its own: a 2-bit tiling within the tie of a base-3 one still
  // streams a quarter more.)
  if (request.tile_rows == 0 && tokens == 1) {
    // Timed streamed, every layout reads the same bytes from memory and single calls vary more:
    // a tie is wider there. (A 2-row layout that won by 5% streamed made prefill at two threads
    // nearly half as fast on the 2B model's 13824x2560 matrix as the 8-row one.)
    const double layout_tie = best->plan.weights_streamed ? 1.10 : 1.03;
    // Within that tie, the layout that reads the fewest bytes: a whole model streams from memory
    // with other work between its matrices, and there a matrix timed alone (its pages in the TLB,
    // the bus idle before it) can be faster than the bandwidth decoding sees. Measured on a Zen 5
    // on the 2B model's 2560x2560: base3 38.4 us, the 2-bit layout 35.1 us timed alone; decoding
    // the whole model at one thread 13-19% faster with base3 (33.5 against 28.3-29.9 tokens/s).
    if (best->plan.weights_streamed && densities_differ) {
      const Candidate* fewest = best;
      for (const Candidate& c : candidates) {
        if (c.plan.ns_per_call <= best->plan.ns_per_call * layout_tie &&
            layout_unit_weights(c.plan.layout) > layout_unit_weights(fewest->plan.layout)) {
          fewest = &c;
        }
      }
      for (const Candidate& c : candidates) {  // that layout's fastest
        if (c.plan.isa == fewest->plan.isa && c.plan.layout == fewest->plan.layout &&
            c.plan.ns_per_call < fewest->plan.ns_per_call) {
          fewest = &c;
        }
      }
      best = fewest;
    }
    const Candidate* tallest = best;
    for (const Candidate& c : candidates) {
      if (c.plan.isa == best->plan.isa && c.plan.layout == best->plan.layout &&
          c.plan.ns_per_call <= best->plan.ns_per_call * layout_tie &&
          (c.plan.tile_rows > tallest->plan.tile_rows ||
           (c.plan.tile_rows == tallest->plan.tile_rows &&
            c.plan.ns_per_call < tallest->plan.ns_per_call))) {
        tallest = &c;
      }
    }
    best = tallest;
  }
  return best->plan;
}

void Autotuner::load_cache() {
  if (cache_file_.empty()) return;
  // The temporaries of a run killed while saving this cache (AtomicFile's, only the dead ones).
  remove_stale_temporaries(cache_file_.has_parent_path() ? cache_file_.parent_path() : ".",
                           cache_file_.filename().string());
  std::error_code ec;
  if (!std::filesystem::exists(cache_file_, ec)) return;
  try {
    const auto doc = nlohmann::json::parse(read_file(cache_file_));
    if (doc.value("format", "") == kCacheFormat && doc.value("version", 0) < kCacheVersion) {
      spdlog::info("autotune cache {} is from an older nanochat; plans will be measured again",
                   cache_file_.string());
      return;
    }
    if (doc.value("format", "") != kCacheFormat || doc.value("version", 0) != kCacheVersion) {
      fail<FormatError>("not a version {} {} file", kCacheVersion, kCacheFormat);
    }
    if (doc.value("cpu", "") != cpu_info().signature()) {
      fail<FormatError>("it was written for another CPU ({})", doc.value("cpu", "?"));
    }
    std::map<std::string, Plan> loaded;
    for (const auto& [key, entry] : doc.at("plans").items()) {
      Plan p;
      const auto isa = parse_isa(entry.at("isa").get<std::string>());
      if (!isa || !isa_supported(*isa, cpu_info().features)) {
        fail<FormatError>("plan {} names an unusable kernel", key);
      }
      p.isa = *isa;
      const auto layout = parse_layout(entry.at("layout").get<std::string>());
      if (!layout || !kernel_has_layout(p.isa, *layout)) {
        fail<FormatError>("plan {} names a layout the {} kernel cannot run here", key,
                          kernel_info(p.isa).name);
      }
      p.layout = *layout;
      p.tile_rows = entry.at("tile_rows").get<int>();
      p.token_block = entry.at("token_block").get<int>();
      p.ns_per_call = entry.at("ns_per_call").get<double>();
      p.variant = entry.value("variant", 0);
      p.weights_streamed = entry.value("weights", "cache") == "memory";
      const KernelInfo& k = kernel_info(p.isa);
      if (std::find(k.tile_rows.begin(), k.tile_rows.end(), p.tile_rows) == k.tile_rows.end() ||
          std::find(k.token_blocks.begin(), k.token_blocks.end(), p.token_block) ==
              k.token_blocks.end()) {
        fail<FormatError>("plan {} names a tiling the {} kernel lacks", key, k.name);
      }
      if (p.variant < 0 || p.variant >= k.variants()) {
        fail<FormatError>("plan {} names a variant the {} kernel cannot run here", key, k.name);
      }
      p.source = "cache";
      loaded.emplace(key, p);
    }
    plans_ = std::move(loaded);
  } catch (const std::exception& e) {
    spdlog::warn("autotune cache {} is unusable ({}); ignoring it, it will be rewritten",
                 cache_file_.string(), e.what());
    plans_.clear();
  }
}

void Autotuner::save_cache() const {
  if (cache_file_.empty()) return;
  nlohmann::json plans = nlohmann::json::object();
  for (const auto& [key, p] : plans_) {
    plans[key] = {
        {"isa", isa_name(p.isa)},      {"layout", layout_name(p.layout)},
        {"tile_rows", p.tile_rows},    {"token_block", p.token_block},
        {"variant", p.variant},        {"weights", p.weights_streamed ? "memory" : "cache"},
        {"ns_per_call", p.ns_per_call}};
  }
  const nlohmann::json doc = {{"format", kCacheFormat},
                              {"version", kCacheVersion},
                              {"cpu", cpu_info().signature()},
                              {"cpu_name", cpu_info().brand},
                              {"plans", plans}};
  write_file_atomic(cache_file_, doc.dump(2) + "\n");
}

}  // namespace nanochat::kernels
