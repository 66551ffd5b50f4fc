#include "nanochat/eval/code.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/json_lines.hpp"
#include "nanochat/util/paths.hpp"

namespace nanochat::eval {
namespace fs = std::filesystem;
namespace {

struct SuiteFile {
  const char* name;
  const char* file;
};
// The shipped suites (data/eval/README.md: sources and licences).
constexpr SuiteFile kSuites[] = {
    {"humaneval-rs", "multipl-e-humaneval-rs.jsonl"},
    {"mbpp-rs", "multipl-e-mbpp-rs.jsonl"},
    {"humaneval-x", "humaneval-x-rust.jsonl"},
};

// Problems whose tests cannot compile with any completion (data/eval/README.md).
constexpr const char* kBroken[] = {"mbpp_67_bell_number"};

std::string field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_string()) {
    fail<FormatError>("{}: no string field '{}'; expected a MultiPL-E or HumanEval-X record", where,
                      key);
  }
  return j[key].get<std::string>();
}

// HumanEval-X declarations import three external crates plain rustc cannot link; no problem
// that passes without them uses them.
std::string drop_external_crates(const std::string& declaration) {
  std::string out;
  std::istringstream in(declaration);
  for (std::string line; std::getline(in, line);) {
    if (line == "use rand::Rng;" || line == "use regex::Regex;" || line == "use md5;") continue;
    out += line + "\n";
  }
  if (!declaration.empty() && declaration.back() != '\n' && !out.empty()) out.pop_back();
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Runs argv in `dir` with limits; collects up to `limits.output_bytes` of stdout+stderr (more
// kills the process: kOutputLimit); kills the process group at the wall-clock limit.
struct ChildResult {
  int exit_code = -1;  // -signal when killed
  bool timed_out = false;
  bool output_limit = false;
  std::string output;
};

ChildResult run_child(const std::vector<std::string>& argv, const fs::path& dir, double cpu_s,
                      std::int64_t memory, std::int64_t output_bytes, double wall_s) {
  // Everything the child needs is prepared before fork: the parent has other threads, so the
  // child may not allocate before exec.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const rlim_t cpu = static_cast<rlim_t>(std::ceil(cpu_s));
  const rlim_t fsize = static_cast<rlim_t>(std::max<std::int64_t>(output_bytes, 64 << 20));
  int pipe_fd[2];
  if (pipe2(pipe_fd, O_CLOEXEC) != 0) fail<IoError>("eval: cannot create a pipe");
  const pid_t pid = fork();
  if (pid < 0) fail<IoError>("eval: cannot fork");
  if (pid == 0) {
    setpgid(0, 0);
    dup2(pipe_fd[1], STDOUT_FILENO);
    dup2(pipe_fd[1], STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    if (chdir(dir.c_str()) != 0) _exit(126);
    auto limit = [](int what, rlim_t v) {
      rlimit r{v, v};
      setrlimit(what, &r);
    };
    limit(RLIMIT_CPU, cpu);
    if (memory > 0) limit(RLIMIT_AS, static_cast<rlim_t>(memory));
    limit(RLIMIT_FSIZE, fsize);
    limit(RLIMIT_CORE, 0);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipe_fd[1]);
  ChildResult r;
  const auto start = std::chrono::steady_clock::now();
  char buf[65536];
  bool open_pipe = true;
  int status = 0;
  bool reaped = false;
  while (!reaped) {
    const double left = wall_s - seconds_since(start);
    if (left <= 0) {
      r.timed_out = true;
      kill(-pid, SIGKILL);
      break;
    }
    if (open_pipe) {
      pollfd p{pipe_fd[0], POLLIN, 0};
      const int ready = poll(&p, 1, static_cast<int>(std::min(left, 0.1) * 1000) + 1);
      if (ready > 0) {
        const ssize_t n = read(pipe_fd[0], buf, sizeof buf);
        if (n > 0) {
          const auto keep = std::min<std::int64_t>(
              n,
              std::max<std::int64_t>(0, output_bytes - static_cast<std::int64_t>(r.output.size())));
          r.output.append(buf, static_cast<std::size_t>(keep));
          if (static_cast<std::int64_t>(r.output.size()) >= output_bytes) {
            r.output_limit = true;
            kill(-pid, SIGKILL);
            break;
          }
        } else {
          open_pipe = false;  // EOF: the child (and its children) closed their output
        }
      }
    } else {
      usleep(5000);
    }
    if (waitpid(pid, &status, WNOHANG) == pid) reaped = true;
  }
  if (!reaped) waitpid(pid, &status, 0);
  kill(-pid, SIGKILL);  // anything the program left running in its group
  close(pipe_fd[0]);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.exit_code = -WTERMSIG(status);
  return r;
}

std::string first_lines(const std::string& text, int n) {
  std::size_t pos = 0;
  for (int i = 0; i < n && pos != std::string::npos; ++i) {
    pos = text.find('\n', pos == 0 ? 0 : pos + 1);
  }
  return pos == std::string::npos ? text : text.substr(0, pos);
}

}  // namespace

const std::vector<std::string>& suite_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& s : kSuites) v.emplace_back(s.name);
    return v;
  }();
  return names;
}

CodeSuite load_suite(const std::string& name_or_path) {
  fs::path path = name_or_path;
  std::string name = name_or_path;
  bool known = false;
  for (const auto& s : kSuites) {
    if (name_or_path != s.name) continue;
    known = true;
    const auto found = find_data_file(fs::path("eval") / s.file);
    if (!found) {
      std::string where;
      for (const auto& d : data_dirs())
        where += (where.empty() ? "" : ", ") + (d / "eval").string();
      fail<UsageError>("--set {}: {} is not installed (looked in {}); reinstall nanochat", s.name,
                       s.file, where);
    }
    path = *found;
  }
  if (!known && !fs::is_regular_file(path)) {
    std::string names;
    for (const auto& s : kSuites) names += (names.empty() ? "" : ", ") + std::string(s.name);
    fail<UsageError>("--set {}: neither a suite nanochat ships ({}) nor a JSON-lines file",
                     name_or_path, names);
  }
  if (!known) name = path.stem().string();
  CodeSuite suite;
  suite.name = name;
  bool format_known = false;
  for_each_json_line(
      path, "one problem (MultiPL-E or HumanEval-X)",
      [&](const nlohmann::json& j, const std::string& where) {
        const bool humaneval_x = j.contains("task_id") && j.contains("declaration");
        if (!format_known) {
          suite.format = humaneval_x ? SuiteFormat::kHumanEvalX : SuiteFormat::kMultiplE;
          format_known = true;
        } else if (humaneval_x != (suite.format == SuiteFormat::kHumanEvalX)) {
          fail<FormatError>("{}: a record of another format than the file's first", where);
        }
        CodeProblem p;
        if (humaneval_x) {
          p.id = field(j, "task_id", where);
          const std::string decl = drop_external_crates(field(j, "declaration", where));
          p.prompt = field(j, "prompt", where) + decl;
          p.stop = {"\n}"};
          p.head = decl;
          p.tail = "\n}\n" + field(j, "test", where);
          p.test_harness = true;
          std::string ref = field(j, "canonical_solution", where);
          // The reference ends with the function's closing brace; the program adds its own.
          const auto close = ref.find_last_of('}');
          if (close != std::string::npos) ref.erase(close);
          while (!ref.empty() && (ref.back() == '\n' || ref.back() == ' ')) ref.pop_back();
          p.reference = ref;
        } else {
          p.id = field(j, "name", where);
          p.prompt = field(j, "prompt", where);
          p.head = p.prompt;
          std::string test = field(j, "test", where);
          // mbpp-rs tests start with the function's closing brace, humaneval-rs tests do not.
          if (!test.empty() && test[0] == '}') test.erase(0, 1);
          p.tail = "\n}\n" + test;
          if (j.contains("stop_tokens") && j["stop_tokens"].is_array()) {
            for (const auto& s : j["stop_tokens"]) {
              if (s.is_string()) p.stop.push_back(s.get<std::string>());
            }
          }
          if (p.stop.empty()) p.stop = {"\n}"};
        }
        if (std::find(std::begin(kBroken), std::end(kBroken), p.id) != std::end(kBroken)) {
          suite.skipped.push_back(p.id +
                                  ": its test never compiles (an integer literal too large)");
          return;
        }
        suite.problems.push_back(std::move(p));
      });
  if (suite.problems.empty()) fail<FormatError>("{}: no problems in the file", path.string());
  return suite;
}

std::string assemble_program(const CodeProblem& p, const std::string& completion) {
  return p.head + completion + p.tail;
}

const char* run_status_name(RunStatus s) {
  switch (s) {
    case RunStatus::kPass:
      return "pass";
    case RunStatus::kCompileError:
      return "compile_error";
    case RunStatus::kFail:
      return "fail";
    case RunStatus::kTimeout:
      return "timeout";
    case RunStatus::kOutputLimit:
      return "output_limit";
    case RunStatus::kCrash:
      return "crash";
    case RunStatus::kPromptTooLong:
      return "prompt_too_long";
  }
  return "?";
}

std::string find_rustc(const std::string& requested) {
  std::vector<std::string> candidates;
  if (!requested.empty()) {
    candidates.push_back(requested);
  } else {
    candidates = {"/usr/bin/rustc", "rustc"};
  }
  for (const auto& c : candidates) {
    const fs::path dir = fs::temp_directory_path();
    const ChildResult r = run_child({c, "--version"}, dir, 30, 0, 1 << 16, 30);
    if (r.exit_code == 0 && r.output.rfind("rustc ", 0) == 0) return c;
  }
  fail<UsageError>(
      "--rustc: {} does not run; install Debian's rustc (tools/setup.sh --corpus, or apt-get "
      "install rustc) or name one with --rustc PATH",
      requested.empty() ? "no rustc (/usr/bin/rustc or on PATH)" : requested);
}

RunResult run_rust(const std::string& program, bool test_harness, const std::string& rustc,
                   const SandboxLimits& limits) {
  const auto start = std::chrono::steady_clock::now();
  std::string tmpl = (fs::temp_directory_path() / "nanochat-eval-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) fail<IoError>("eval: cannot create a temporary folder");
  const fs::path dir = tmpl;
  RunResult r;
  try {
    write_file_atomic(dir / "main.rs", program);
    std::vector<std::string> compile = {rustc, "--edition",   "2021",    "-A", "warnings",
                                        "-C",  "opt-level=1", "main.rs", "-o", "main"};
    if (test_harness) compile.insert(compile.begin() + 1, "--test");
    const ChildResult c = run_child(compile, dir, 60, 0, 1 << 20, 120);
    if (c.exit_code != 0) {
      r.status = c.timed_out ? RunStatus::kTimeout : RunStatus::kCompileError;
      r.exit_code = c.exit_code;
      r.message = first_lines(c.output, 4);
    } else {
      // The program runs without network: `unshare -n` gives it a network namespace of its own
      // (loopback only, down) where the kernel allows it; else it runs with the limits only.
      std::vector<std::string> run = {"./main"};
      if (test_harness) run = {"./main", "--test-threads=1", "-q"};
      static const bool can_unshare = [] {
        const ChildResult u =
            run_child({"unshare", "-n", "true"}, fs::temp_directory_path(), 5, 0, 4096, 10);
        return u.exit_code == 0;
      }();
      if (can_unshare) run.insert(run.begin(), {"unshare", "-n"});
      const ChildResult e = run_child(run, dir, limits.cpu_seconds, limits.memory_bytes,
                                      limits.output_bytes, limits.wall_seconds);
      r.exit_code = e.exit_code;
      r.message = first_lines(e.output, 4);
      if (e.output_limit) {
        r.status = RunStatus::kOutputLimit;
      } else if (e.timed_out || e.exit_code == -SIGXCPU || e.exit_code == -SIGKILL) {
        r.status = RunStatus::kTimeout;
      } else if (e.exit_code == 0) {
        r.status = RunStatus::kPass;
      } else if (e.exit_code < 0) {
        r.status = RunStatus::kCrash;
      } else {
        r.status = RunStatus::kFail;
      }
    }
  } catch (...) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    throw;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  r.seconds = seconds_since(start);
  return r;
}

CodeEvalReport evaluate_code(
    engine::Session* session, const CodeSuite& suite, const CodeEvalOptions& o,
    const std::function<void(const ProblemResult&, std::size_t, std::size_t)>& on_problem) {
  const auto start = std::chrono::steady_clock::now();
  if (o.reference && suite.problems.front().reference.empty()) {
    fail<UsageError>("--reference: suite {} has no reference solutions (HumanEval-X has)",
                     suite.name);
  }
  if (!o.reference && session == nullptr) fail("evaluate_code: no session and no --reference");
  for (int k : o.ks) pass_at_k(o.reference ? 1 : o.samples, 0, k);  // validates every k
  const std::size_t total =
      o.limit > 0 ? std::min<std::size_t>(static_cast<std::size_t>(o.limit), suite.problems.size())
                  : suite.problems.size();
  CodeEvalReport report;
  report.suite = suite.name;
  report.problems.resize(total);
  // Programs compile and run on up to o.jobs threads while the model writes the next
  // completions; results are taken in the order they were started, so problems finish in order.
  struct Pending {
    std::size_t problem;
    std::future<RunResult> run;
  };
  std::deque<Pending> pending;
  std::vector<int> left(total, 0);
  std::size_t finished = 0;
  auto take_oldest = [&] {
    Pending p = std::move(pending.front());
    pending.pop_front();
    ProblemResult& pr = report.problems[p.problem];
    pr.runs.push_back(p.run.get());
    if (pr.runs.back().status == RunStatus::kPass) ++pr.passed;
    if (--left[p.problem] == 0 && on_problem) on_problem(pr, ++finished, total);
  };
  const int n = o.reference ? 1 : o.samples;
  for (std::size_t i = 0; i < total; ++i) {
    const CodeProblem& p = suite.problems[i];
    ProblemResult& pr = report.problems[i];
    pr.id = p.id;
    left[i] = n;
    for (int j = 0; j < n; ++j) {
      std::string completion;
      if (o.reference) {
        completion = p.reference;
      } else {
        engine::GenerateOptions g;
        g.n_predict = o.max_tokens;
        g.sampling = o.sampling;
        g.sampling.seed = o.sampling.seed + static_cast<std::uint64_t>(j);
        g.stop = p.stop;
        try {
          completion = session->generate(p.prompt, g).text;
        } catch (const UsageError& e) {  // the prompt does not fit the context
          RunResult r;
          r.status = RunStatus::kPromptTooLong;
          r.message = e.what();
          std::promise<RunResult> ready;
          ready.set_value(r);
          pr.completions.emplace_back();
          pending.push_back({i, ready.get_future()});
          continue;
        }
      }
      while (static_cast<int>(pending.size()) >= std::max(1, o.jobs)) take_oldest();
      pending.push_back(
          {i, std::async(std::launch::async, run_rust, assemble_program(p, completion),
                         p.test_harness, o.rustc, o.limits)});
      pr.completions.push_back(std::move(completion));
    }
  }
  while (!pending.empty()) take_oldest();
  for (int k : o.ks) {
    double sum = 0;
    for (const auto& pr : report.problems) {
      sum += pass_at_k(static_cast<int>(pr.runs.size()), pr.passed, k);
    }
    report.pass_at.emplace_back(
        k, report.problems.empty() ? 0.0 : sum / static_cast<double>(report.problems.size()));
  }
  report.seconds = seconds_since(start);
  return report;
}

double pass_at_k(int n, int c, int k) {
  if (k > n || k <= 0) fail<UsageError>("-k {}: needs 1 <= k <= the number of samples {}", k, n);
  if (n - c < k) return 1.0;
  // 1 - prod_{i = n-c+1}^{n} (1 - k / i), numerically stable.
  double prod = 1.0;
  for (int i = n - c + 1; i <= n; ++i) prod *= 1.0 - static_cast<double>(k) / i;
  return 1.0 - prod;
}

}  // namespace nanochat::eval
