#include "nanochat/cli/common.hpp"

#include <charconv>

#include "nanochat/util/error.hpp"

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

}  // namespace nanochat::cli
