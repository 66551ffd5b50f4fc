#include "nanochat/cli/common.hpp"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <iostream>
#include <iterator>

#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

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

Shape parse_shape(std::string_view text, std::string_view flag) {
  const std::size_t x = text.find_first_of("xX");
  Shape s;
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
      ->envname("NANOCHAT_ARG_THREADS");
  app.add_option("--isa", isa,
                 "Force a kernel path: scalar, avx2 or avx512 (default: NANOCHAT_ISA, else the "
                 "best this CPU has)");
  app.add_option("--autotune", autotune,
                 "on: use cached kernel timings and measure what is missing; off: built-in "
                 "defaults; force: measure again")
      ->capture_default_str();
}

kernels::KernelOptions KernelFlags::options(int thread_count) const {
  kernels::KernelOptions o;
  o.threads = thread_count;
  o.tune = kernels::parse_tune_mode(autotune);
  o.isa = kernels::isa_override(isa);
  return o;
}

std::string read_text_input(const std::string& prompt, bool prompt_given, const std::string& file,
                            bool allow_stdin) {
  if (prompt_given && !file.empty())
    fail<UsageError>("-p and -f both given; pass the text one way");
  if (prompt_given) return prompt;
  if (!file.empty()) return read_file(file);
  if (!allow_stdin || ::isatty(0)) {
    fail<UsageError>("no text: pass -p TEXT or -f FILE{}",
                     allow_stdin ? ", or pipe it on stdin" : "");
  }
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
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
      ->capture_default_str();
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
