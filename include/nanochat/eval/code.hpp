// pass@k on Rust code-generation suites: MultiPL-E HumanEval-rs and MBPP-rs, HumanEval-X Rust.
// Each completion is assembled with the suite's tests into a program, compiled with rustc and run
// in a fresh temporary folder under CPU-time, memory, output-size and wall-clock limits, without
// network, and the folder is removed afterwards.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nanochat/engine/session.hpp"

namespace nanochat::eval {

enum class SuiteFormat { kMultiplE, kHumanEvalX };

struct CodeProblem {
  std::string id;                 // "HumanEval_24_largest_divisor", "Rust/0"
  std::string prompt;             // what the model continues
  std::vector<std::string> stop;  // the completion ends before the first of these
  std::string head;               // program text before the completion
  std::string tail;               // program text after the completion
  bool test_harness = false;      // rustc --test (HumanEval-X) or a plain main (MultiPL-E)
  std::string reference;          // a known-good completion (HumanEval-X), else empty
};

struct CodeSuite {
  std::string name;
  SuiteFormat format = SuiteFormat::kMultiplE;
  std::vector<CodeProblem> problems;
  std::vector<std::string> skipped;  // ids dropped, each with the reason
};

// The suites nanochat ships (data/eval/ in the source tree, share/nanochat/eval/ installed).
const std::vector<std::string>& suite_names();  // humaneval-rs, mbpp-rs, humaneval-x

// Loads a suite by name (suite_names()) or from a JSON-lines file of either format. Throws
// UsageError for an unknown name and FormatError naming the file and line of a bad record.
CodeSuite load_suite(const std::string& name_or_path);

// The program for `completion` (the model's text, already cut at a stop sequence).
std::string assemble_program(const CodeProblem& p, const std::string& completion);

struct SandboxLimits {
  double cpu_seconds = 10;                // per run (compiling gets 60)
  std::int64_t memory_bytes = 1LL << 30;  // address space of the program
  std::int64_t output_bytes = 1 << 20;    // stdout + stderr, and any file it writes
  double wall_seconds = 20;               // per run (compiling gets 120)
};

// kPromptTooLong: the problem's prompt does not fit the model's context (counted as a failure).
enum class RunStatus {
  kPass,
  kCompileError,
  kFail,
  kTimeout,
  kOutputLimit,
  kCrash,
  kPromptTooLong
};
const char* run_status_name(RunStatus s);

struct RunResult {
  RunStatus status = RunStatus::kFail;
  int exit_code = -1;   // or -signal
  double seconds = 0;   // compile + run, wall clock
  std::string message;  // the first lines of rustc's or the program's output
};

// Compiles and runs one program in a fresh temporary folder (removed afterwards), without
// network where the kernel allows it (a new network namespace), under `limits`.
RunResult run_rust(const std::string& program, bool test_harness, const std::string& rustc,
                   const SandboxLimits& limits);

// The rustc to use: `requested` when given, else Debian's /usr/bin/rustc, else rustc on PATH.
// Throws UsageError naming --rustc when none runs.
std::string find_rustc(const std::string& requested);

// The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), for n samples
// of which c passed; k <= n.
double pass_at_k(int n, int c, int k);

struct CodeEvalOptions {
  int samples = 1;                // completions per problem (n)
  std::vector<int> ks = {1};      // pass@k for each k <= samples
  model::SamplerParams sampling;  // temperature 0: greedy
  int max_tokens = 384;           // per completion; a completion cut here usually fails
  int limit = 0;                  // first N problems only (0: all)
  bool reference = false;         // run the suite's reference solutions, not the model
  std::string rustc;              // from find_rustc
  int jobs = 2;                   // programs compiled and run at once, beside generation
  SandboxLimits limits;
};

struct ProblemResult {
  std::string id;
  std::vector<std::string> completions;
  std::vector<RunResult> runs;
  int passed = 0;
};

struct CodeEvalReport {
  std::string suite;
  std::vector<ProblemResult> problems;
  std::vector<std::pair<int, double>> pass_at;  // (k, mean pass@k over problems)
  double seconds = 0;
};

// Generates `samples` completions per problem with `session` (sample j of every problem is
// drawn with seed sampling.seed + j) and runs each through run_rust; with options.reference,
// runs each problem's reference instead (session may be null). `on_problem` after each problem.
// Throws UsageError when reference is asked of a suite without references.
CodeEvalReport evaluate_code(engine::Session* session, const CodeSuite& suite,
                             const CodeEvalOptions& options,
                             const std::function<void(const ProblemResult&, std::size_t done,
                                                      std::size_t total)>& on_problem = {});

}  // namespace nanochat::eval
