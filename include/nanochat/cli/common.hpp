// Helpers shared by the nanochat subcommands: argument parsing beyond what CLI11 does, and the
// kernel options every compute command takes (-t, --isa, --autotune).
#pragma once

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nanochat/engine/loaded_model.hpp"
#include "nanochat/engine/session.hpp"
#include "nanochat/kernels/benchmark.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/model/sampler.hpp"
#include "nanochat/zoo/download.hpp"

namespace nanochat::cli {

// "1,2,4" -> {1, 2, 4}; every value must be >= min_value. Throws UsageError naming `flag`.
std::vector<int> parse_int_list(std::string_view text, std::string_view flag, int min_value = 1);
// -t's thread counts: parse_int_list's rules, and at most kernels::max_thread_count() each.
std::vector<int> parse_thread_list(std::string_view text);

// The same as a CLI11 check, so that a bad value from an environment variable is named as the
// variable (main() does that for CLI11's errors).
std::function<std::string(const std::string&)> thread_list_check();

// Thrown by a command that stopped on Ctrl-C after saving its work; main exits with 130 (the
// shell's code for SIGINT) and prints nothing more.
struct Interrupted {};

// "2560x2560" (M rows x K columns). Throws UsageError naming `flag`.
kernels::MatrixShape parse_shape(std::string_view text, std::string_view flag);

// Options of commands that run kernels.
struct KernelFlags {
  std::string threads;  // "-t": one count, or a list where the command allows it
  std::string isa;      // "--isa"
  std::string autotune = "on";

  void add_to(CLI::App& app, bool thread_list);
  // Validated kernel options for a given thread count (0 = default).
  kernels::KernelOptions options(int threads) const;
  // The one thread count of a command that takes one (0 = default): a list is an error, more
  // threads than the machine has logical CPUs a warning.
  int single_thread_count() const;
};

// "[=====     ] text" on stderr, redrawn in place (for terminals); cleared when done == total.
void progress_bar(std::uint64_t done, std::uint64_t total, std::string_view text);

// -m's value as a file to open: a path as is; a registry name, an http(s):// URL or an hf://
// address from the model cache, downloaded first when --pull (or the registry entry) allows it,
// with download_reporting's progress; empty: the default model.
std::string model_path(const std::string& model);
// --pull / NANOCHAT_PULL=1 (a flag of the whole program): model_path may download.
void set_pull(bool allowed);

// How the CLI shows a download: on a terminal a bar (bytes, rate, ETA) redrawn in place, else
// JSON lines on stderr about once a second; notices (retries, resumes) as lines on stderr.
// Ctrl-C (after catch_interrupts()) cancels it, keeping the partial file.
zoo::DownloadOptions download_reporting(const std::string& name);

// The model of -m (a path, registry name or address, see model_path; empty: the default model),
// loaded with the kernel flags; on a terminal, a progress bar while it loads; with -v, what loading
// does and how long it took.
std::shared_ptr<engine::LoadedModel> load_model(const std::string& model, const KernelFlags& kernel,
                                                const std::string& chat_template = "");

// A warning (as llama.cpp gives one) when `context` exceeds what the model was trained for.
void warn_context(const engine::LoadedModel& model, std::int64_t context);

// Ctrl-C for commands that stop their work cleanly: after catch_interrupts(), SIGINT sets a flag
// that interrupted() reads (clear_interrupted() resets it) instead of ending the process; a
// second Ctrl-C ends it (call catch_interrupts() again to catch the next one).
void catch_interrupts();
bool interrupted();
const std::atomic<bool>& interrupt_flag();
void clear_interrupted();

// Timing ratios (0 when there is nothing to divide by).
double ms_per_token(double ms, std::int64_t n);
double tokens_per_second(double ms, std::int64_t n);

// generate's and chat's timing lines on stderr (llama.cpp's layout), with the finish reason
// (nullptr: none, for sums over several answers) and the seed; load_ms 0: no load line.
void print_timings(const engine::Timings& t, double load_ms, const char* finish,
                   std::uint64_t seed);

// The CLI's name for a library parameter (InvalidArgument::parameter): "temperature" -> "--temp".
std::string flag_for(std::string_view parameter);

// The text a command works on: -p TEXT (when `prompt_given`), else -f FILE, else stdin when
// `allow_stdin` and stdin is not a terminal. UsageError when none or both are given.
std::string read_text_input(const std::string& prompt, bool prompt_given, const std::string& file,
                            bool allow_stdin);

// Sampling options shared by generate and chat (llama.cpp's flag names).
struct SamplingFlags {
  model::SamplerParams params;
  std::int64_t seed = -1;  // -1: from the clock

  void add_to(CLI::App& app);
  // The parameters with the seed resolved; validated (UsageError naming the flag).
  model::SamplerParams resolve() const;
};

}  // namespace nanochat::cli
