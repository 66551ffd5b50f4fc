#include "nanochat/cli/common.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "nanochat/kernels/registry.hpp"
#include "nanochat/kernels/thread_pool.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/zoo/default_model.hpp"
#include "nanochat/zoo/store.hpp"

namespace nanochat::cli {
namespace {

bool parse_int64(std::string_view text, std::int64_t& out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

std::vector<int> parse_int_list(std::string_view text, std::string_view flag, int min_value) {
  std::vector<int> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    std::int64_t value = 0;
    if (!parse_int64(item, value) || value < min_value || value > 4096) {
      fail<UsageError>("{} {}: '{}' is not a whole number from {} to 4096{}", flag, text, item,
                       min_value,
                       text.find(',') != std::string_view::npos ? " in a comma list" : "");
    }
    out.push_back(static_cast<int>(value));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::vector<int> parse_thread_list(std::string_view text) {
  std::vector<int> out = parse_int_list(text, "-t");
  for (int n : out) {
    if (n > kernels::max_thread_count()) {
      fail<UsageError>(
          "-t {}: at most {} threads on this machine ({} CPUs to run on; more threads than CPUs "
          "only slow the kernels down)",
          text, kernels::max_thread_count(), kernels::usable_cpu_count());
    }
  }
  return out;
}

std::function<std::string(const std::string&)> thread_list_check() {
  return [](const std::string& value) -> std::string {
    try {
      (void)parse_thread_list(value);
      return {};
    } catch (const UsageError& e) {
      return e.what();
    }
  };
}

kernels::MatrixShape parse_shape(std::string_view text, std::string_view flag) {
  const std::size_t x = text.find_first_of("xX");
  kernels::MatrixShape s;
  if (x == std::string_view::npos || !parse_int64(text.substr(0, x), s.rows) ||
      !parse_int64(text.substr(x + 1), s.cols) || s.rows < 1 || s.cols < 1 ||
      s.rows > (std::int64_t{1} << 22) || s.cols > (std::int64_t{1} << 22)) {
    fail<UsageError>("{} {}: expected ROWSxCOLS with both from 1 to 4194304, e.g. 2560x6912", flag,
                     text);
  }
  return s;
}

void KernelFlags::add_to(CLI::App& app, bool thread_list) {
  app.add_option("-t,--threads", threads,
                 thread_list ? "Thread counts, comma separated (default: physical cores)"
                             : "Threads (default: physical cores)")
      ->envname("NANOCHAT_ARG_THREADS")
      ->check(thread_list_check());
  app.add_option("--isa", isa,
                 "Force a kernel path: scalar, avx2 or avx512 (default: NANOCHAT_ISA, else the "
                 "best this CPU has)");
  app.add_option("--autotune", autotune,
                 "on: use cached kernel timings and measure what is missing; off: built-in "
                 "defaults; force: measure again")
      ->capture_default_str();
}

int KernelFlags::single_thread_count() const {
  if (threads.empty()) return 0;
  if (threads.find(',') != std::string::npos) {
    fail<UsageError>("-t {}: this command takes one thread count, not a list", threads);
  }
  const int n = parse_thread_list(threads)[0];
  const int cpus = cpu_info().logical_cpus;
  if (n > cpus) {
    spdlog::warn(
        "-t {}: this machine has {} logical CPUs; more threads than that only slow "
        "the kernels down",
        n, cpus);
  }
  return n;
}

void progress_bar(std::uint64_t done, std::uint64_t total, std::string_view text) {
  constexpr std::uint64_t kWidth = 30;
  // One line: text longer than the terminal leaves is cut, or each redraw would wrap.
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > kWidth + 4) {
    const std::size_t room = ws.ws_col - kWidth - 4;
    if (text.size() > room) text = text.substr(text.size() - room);  // keep the figures' end
  }
  const std::uint64_t filled = total > 0 ? std::min(kWidth, kWidth * done / total) : kWidth;
  fmt::print(stderr, "\r\033[K[{}{}] {}", std::string(filled, '='),
             std::string(kWidth - filled, ' '), text);
  if (done >= total) fmt::print(stderr, "\r\033[K");
  std::fflush(stderr);
}

namespace {
std::atomic<bool> g_pull{false};

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 359999) return "--:--";
  const auto s = std::lround(seconds);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02}", s / 60, s % 60);
}
}  // namespace

void set_pull(bool allowed) { g_pull.store(allowed); }

zoo::DownloadOptions download_reporting(const std::string& name) {
  struct State {
    bool tty = ::isatty(STDERR_FILENO) != 0;
    double last = -1;
    bool drawn = false;
    bool finished = false;
    std::mutex mutex;
  };
  auto state = std::make_shared<State>();
  zoo::DownloadOptions o;
  o.cancel = &interrupt_flag();
  o.on_progress = [state, name](const zoo::DownloadProgress& p) {
    const std::lock_guard lock(state->mutex);
    const double now = now_seconds();
    const bool done = p.total != 0 && p.done >= p.total;
    if (done && state->finished) return;  // the end is reported once
    if (!done && now - state->last < (state->tty ? 0.1 : 1.0)) return;
    state->last = now;
    state->finished = done;
    const double mib = 1e6;
    if (state->tty) {
      const double eta = p.bytes_per_second > 0 && p.total > p.done
                             ? static_cast<double>(p.total - p.done) / p.bytes_per_second
                             : -1;
      const std::string size =
          p.total != 0 ? fmt::format("{:.1f}/{:.1f} MiB", static_cast<double>(p.done) / mib,
                                     static_cast<double>(p.total) / mib)
                       : fmt::format("{:.1f} MiB", static_cast<double>(p.done) / mib);
      progress_bar(p.done, p.total != 0 ? p.total : p.done + 1,
                   fmt::format("{} {} {:.1f} MiB/s ETA {}", name, size, p.bytes_per_second / mib,
                               done ? "0:00" : format_duration(eta)));
      state->drawn = !done;
    } else {
      const nlohmann::json j = {
          {"event", "progress"},
          {"model", name},
          {"bytes", p.done},
          {"total", p.total},
          {"bytes_per_second", static_cast<std::uint64_t>(p.bytes_per_second)}};
      fmt::print(stderr, "{}\n", j.dump());
      std::fflush(stderr);
    }
  };
  o.on_notice = [state](const std::string& text) {
    const std::lock_guard lock(state->mutex);
    if (state->tty && state->drawn) fmt::print(stderr, "\r\033[K");
    state->drawn = false;
    if (state->tty) {
      fmt::print(stderr, "nanochat: {}\n", text);
    } else {
      fmt::print(stderr, "{}\n", nlohmann::json{{"event", "notice"}, {"message", text}}.dump());
    }
    std::fflush(stderr);
  };
  return o;
}

std::string model_path(const std::string& model) {
  const zoo::SpecKind kind = model.empty() ? zoo::SpecKind::kPath : zoo::classify_spec(model);
  if (kind == zoo::SpecKind::kPath) return zoo::model_or_default(model);
  zoo::ResolveOptions options;
  options.allow_pull = g_pull.load();
  options.pull.download = download_reporting(model);
  options.pull.on_wait = [](const std::string& name) {
    fmt::print(stderr, "nanochat: {}: another nanochat process is downloading it; waiting\n", name);
  };
  struct sigaction previous {};
  sigaction(SIGINT, nullptr, &previous);
  catch_interrupts();  // Ctrl-C stops a download, keeping what arrived for the next run
  try {
    std::string path = zoo::resolve_model(model, options);
    sigaction(SIGINT, &previous, nullptr);
    clear_interrupted();
    return path;
  } catch (const zoo::DownloadCancelled& e) {
    fmt::print(stderr, "{}nanochat: {}\n", ::isatty(STDERR_FILENO) != 0 ? "\r\033[K" : "",
               e.what());
    throw Interrupted{};
  } catch (...) {
    sigaction(SIGINT, &previous, nullptr);
    throw;
  }
}

std::shared_ptr<engine::LoadedModel> load_model(const std::string& model, const KernelFlags& kernel,
                                                const std::string& chat_template) {
  engine::LoadOptions o;
  o.kernels = kernel.options(kernel.single_thread_count());
  o.chat_template = chat_template;
  const std::string path = model_path(model);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  spdlog::info(
      "loading {}: mapping the file, validating its metadata and tensors, repacking the ternary "
      "weights in the layout the autotuner's plans want",
      path);
  const double start = now_seconds();
  bool drawn = false;
  o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    // Small models load in a blink: the bar appears only for a load that takes a while.
    if (!tty || (!drawn && now_seconds() - start < 0.3)) return;
    drawn = true;
    const double mb = 1e-6;
    progress_bar(
        done, total,
        fmt::format("loading {} {:.0f}/{:.0f} MB", std::filesystem::path(path).filename().string(),
                    static_cast<double>(done) * mb, static_cast<double>(total) * mb));
  };
  try {
    auto lm = engine::LoadedModel::load(path, o);
    spdlog::info(
        "loaded {} in {:.0f} ms: {} layers, {:.1f} MB of weights read per token, {} kernels on {} "
        "threads; one token was run to autotune the decode shapes",
        path, lm->load_ms(), lm->config().n_layers,
        static_cast<double>(lm->bytes_per_token()) / 1e6, kernels::isa_name(lm->kernels().isa()),
        lm->kernels().threads());
    return lm;
  } catch (...) {
    if (drawn) fmt::print(stderr, "\r\033[K");
    throw;
  }
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted.store(true); }
}  // namespace

void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C ends the process at once
  sigaction(SIGINT, &sa, nullptr);
}
bool interrupted() { return g_interrupted.load(); }
const std::atomic<bool>& interrupt_flag() { return g_interrupted; }
void clear_interrupted() { g_interrupted.store(false); }

double ms_per_token(double ms, std::int64_t n) { return n > 0 ? ms / static_cast<double>(n) : 0.0; }
double tokens_per_second(double ms, std::int64_t n) {
  return ms > 0 ? static_cast<double>(n) * 1e3 / ms : 0.0;
}

void print_timings(const engine::Timings& t, double load_ms, const char* finish,
                   std::uint64_t seed) {
  const std::int64_t run = t.prompt_tokens - t.reused_tokens;
  if (load_ms > 0) fmt::print(stderr, "load:        {:.1f} ms\n", load_ms);
  fmt::print(
      stderr, "prompt eval: {} tokens in {:.1f} ms ({:.2f} ms/token, {:.1f} tokens/s){}\n", run,
      t.prompt_ms, ms_per_token(t.prompt_ms, run), tokens_per_second(t.prompt_ms, run),
      t.reused_tokens > 0 ? fmt::format("; {} more reused from the cache", t.reused_tokens) : "");
  fmt::print(stderr, "eval:        {} tokens in {:.1f} ms ({:.2f} ms/token, {:.1f} tokens/s)\n",
             t.generated_tokens, t.eval_ms, ms_per_token(t.eval_ms, t.generated_tokens),
             tokens_per_second(t.eval_ms, t.generated_tokens));
  if (finish != nullptr) {
    fmt::print(stderr, "finish:      {} (seed {})\n", finish, seed);
  } else {
    fmt::print(stderr, "seed:        {}\n", seed);
  }
}

void warn_context(const engine::LoadedModel& model, std::int64_t context) {
  if (context > model.config().context_length) {
    spdlog::warn("-c {}: the model was trained for {} tokens; past that its output degrades",
                 context, model.config().context_length);
  }
}

std::string flag_for(std::string_view parameter) {
  static constexpr std::pair<std::string_view, std::string_view> kFlags[] = {
      {"temperature", "--temp"},
      {"top_k", "--top-k"},
      {"top_p", "--top-p"},
      {"min_p", "--min-p"},
      {"repeat_penalty", "--repeat-penalty"},
      {"repeat_last_n", "--repeat-last-n"},
      {"context", "-c"},
      {"prompt", "-p"},
      {"stop", "--stop"},
      {"n_predict", "-n"},
      {"reps", "--reps"},
      {"batch", "-b"},
      {"shape", "--shape"},
      {"sha256", "--sha256"},
      {"output", "-o"},
  };
  for (const auto& [name, flag] : kFlags) {
    if (name == parameter) return std::string(flag);
  }
  return std::string(parameter);
}

kernels::KernelOptions KernelFlags::options(int thread_count) const {
  kernels::KernelOptions o;
  o.threads = thread_count;
  o.tune = kernels::parse_tune_mode(autotune);
  o.isa = kernels::isa_override(isa);
  o.layout = kernels::layout_override(o.isa);
  return o;
}

std::string read_text_input(const std::string& prompt, bool prompt_given, const std::string& file,
                            bool allow_stdin) {
  if (prompt_given && !file.empty())
    fail<UsageError>("-p and -f both given; pass the text one way");
  if (prompt_given) return prompt;
  if (!file.empty()) {
    std::string text = read_file(file);
    if (text.find('\0') != std::string::npos) {
      spdlog::warn("{}: holds NUL bytes and looks binary; reading it as text anyway", file);
    }
    return text;
  }
  if (!allow_stdin || ::isatty(0)) {
    fail<UsageError>("no text: pass -p TEXT or -f FILE{}",
                     allow_stdin ? ", or pipe it on stdin" : "");
  }
  std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  if (text.empty()) {  // named here: the engine's "the prompt is empty" would blame -p
    fail<UsageError>("stdin is empty: pipe the text, or pass -p TEXT or -f FILE");
  }
  return text;
}

void SamplingFlags::add_to(CLI::App& app) {
  app.add_option("--temp", params.temperature, "Temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", params.top_k, "Top-k (0: off)")->capture_default_str();
  app.add_option("--top-p", params.top_p, "Top-p (1: off)")->capture_default_str();
  app.add_option("--min-p", params.min_p, "Min-p (0: off)")->capture_default_str();
  app.add_option("--repeat-penalty", params.repeat_penalty, "Repetition penalty (1: off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", params.repeat_last_n,
                 "Tokens the penalty looks back (0: off, -1: all)")
      ->capture_default_str();
  app.add_option("-s,--seed", seed, "Random seed (-1: from the clock; printed at the end)")
      ->capture_default_str()
      ->check([](const std::string& text) -> std::string {
        // Checked as text: a number past int64 would otherwise be clamped to its largest value,
        // and any negative one taken as -1, both silently.
        std::int64_t value = 0;
        if (!parse_int64(text, value) || value < -1) {
          return fmt::format("-s {}: a seed is -1 (from the clock) or a whole number from 0 to {}",
                             text, std::numeric_limits<std::int64_t>::max());
        }
        return {};
      });
}

model::SamplerParams SamplingFlags::resolve() const {
  model::SamplerParams p = params;
  p.seed =
      seed >= 0
          ? static_cast<std::uint64_t>(seed)
          : static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  p.validate();
  return p;
}

}  // namespace nanochat::cli
