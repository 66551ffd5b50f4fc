// nanochat eval: how good a model is. `eval bpb` scores held-out text in bits per byte beside
// xz -9e; `eval code` measures pass@k on Rust code suites through rustc.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/eval/bpb.hpp"
#include "nanochat/eval/code.hpp"
#include "nanochat/gguf/reader.hpp"
#include "nanochat/model/model.hpp"
#include "nanochat/util/corpus.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

double bits_per_byte(std::int64_t compressed, std::int64_t bytes) {
  return bytes > 0 ? 8.0 * static_cast<double>(compressed) / static_cast<double>(bytes) : 0.0;
}

// --- eval bpb ------------------------------------------------------------------------------

struct BpbOptions {
  std::string model;
  std::vector<std::string> inputs;
  std::string ext = ".rs";
  std::int64_t context = 0;
  bool per_file = false;
  bool json = false;
  KernelFlags kernel;
};

void run_bpb(const BpbOptions& o) {
  if (o.context < 0) fail<UsageError>("-c {}: must be 0 (the model's) or positive", o.context);
  std::vector<std::string> exts;
  if (!o.ext.empty()) {
    for (std::size_t pos = 0; pos <= o.ext.size();) {
      const auto comma = std::min(o.ext.find(',', pos), o.ext.size());
      std::string e = o.ext.substr(pos, comma - pos);
      if (!e.empty()) exts.push_back(e[0] == '.' ? e : "." + e);
      pos = comma + 1;
    }
  }
  const CorpusFiles found = collect_corpus(o.inputs, exts);
  if (found.files.empty()) {
    fail<UsageError>("-f: no text files{} in {}", o.ext.empty() ? "" : " with extension " + o.ext,
                     fmt::join(o.inputs, ", "));
  }
  const auto l = load_model(o.model, o.kernel);
  const std::int64_t n_ctx = model::KvCache::resolve_capacity(l->config(), o.context);
  const bool bar = isatty(STDERR_FILENO) != 0 && !o.json;
  const eval::BpbReport r =
      eval::evaluate_bpb(*l, found.files, n_ctx, [&](std::size_t done, std::size_t total) {
        if (bar) progress_bar(done, total, fmt::format("{}/{} files", done, total));
      });
  const engine::Score per_file = r.per_file_total();
  const double xz_concat = bits_per_byte(r.concatenated_xz_bytes, r.concatenated_bytes);
  const double xz_each = bits_per_byte(r.per_file_xz_bytes(), r.per_file_bytes());
  if (o.json) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : r.files) {
      files.push_back({{"path", f.path.string()},
                       {"bytes", f.bytes},
                       {"tokens", f.score.tokens},
                       {"bits_per_byte", f.score.bits_per_byte()},
                       {"xz_bits_per_byte", bits_per_byte(f.xz_bytes, f.bytes)}});
    }
    const nlohmann::json doc = {{"model", l->path().string()},
                                {"context", n_ctx},
                                {"files", files},
                                {"concatenated",
                                 {{"bytes", r.concatenated_bytes},
                                  {"scored_tokens", r.concatenated.tokens},
                                  {"scored_bytes", r.concatenated.bytes},
                                  {"chunks", r.concatenated.chunks},
                                  {"bits_per_byte", r.concatenated.bits_per_byte()},
                                  {"perplexity", r.concatenated.perplexity()},
                                  {"xz_bits_per_byte", xz_concat}}},
                                {"per_file",
                                 {{"bytes", r.per_file_bytes()},
                                  {"scored_tokens", per_file.tokens},
                                  {"bits_per_byte", per_file.bits_per_byte()},
                                  {"xz_bits_per_byte", xz_each}}},
                                {"seconds", r.seconds}};
    std::puts(doc.dump().c_str());
    return;
  }
  if (o.per_file) {
    fmt::print("{:>10} {:>9} {:>9}  {}\n", "bytes", "bpb", "xz bpb", "file");
    for (const auto& f : r.files) {
      fmt::print("{:>10} {:>9.4f} {:>9.4f}  {}\n", f.bytes, f.score.bits_per_byte(),
                 bits_per_byte(f.xz_bytes, f.bytes), f.path.string());
    }
    fmt::print("\n");
  }
  fmt::print("model: {}\n{} files, {} bytes, context {} tokens\n\n", l->path().string(),
             r.files.size(), r.concatenated_bytes, n_ctx);
  fmt::print("{:<34} {:>10} {:>10}\n", "", "model bpb", "xz -9e bpb");
  fmt::print("{:<34} {:>10.4f} {:>10.4f}\n", "concatenated (llama.cpp chunks)",
             r.concatenated.bits_per_byte(), xz_concat);
  fmt::print("{:<34} {:>10.4f} {:>10.4f}\n", "each file alone (total)", per_file.bits_per_byte(),
             xz_each);
  fmt::print(stderr, "scored {} + {} tokens in {:.1f} s\n", r.concatenated.tokens, per_file.tokens,
             r.seconds);
}

// --- eval code -----------------------------------------------------------------------------

struct CodeOptions {
  std::string model;
  std::string set;
  std::string ks = "1";
  int samples = 1;
  double temp = -1;  // -1: 0 (greedy) for one sample, else 0.8
  double top_p = 0.95;
  int max_tokens = 384;
  int limit = 0;
  std::int64_t seed = 1;
  bool reference = false;
  std::string rustc;
  std::string results;
  bool json = false;
  double cpu_limit = 10, wall_limit = 20;
  int jobs = 0;
  std::int64_t memory_mib = 1024, output_kib = 1024;
  KernelFlags kernel;
};

void run_code(const CodeOptions& o) {
  if (o.samples < 1) fail<UsageError>("-n {}: use 1 or more samples per problem", o.samples);
  if (o.max_tokens < 1) fail<UsageError>("--max-tokens {}: use 1 or more", o.max_tokens);
  if (o.limit < 0) fail<UsageError>("--limit {}: use 0 (all) or more", o.limit);
  if (o.temp != -1 && (o.temp < 0 || o.temp > 10)) {
    fail<UsageError>("--temp {}: use a value from 0 to 10", o.temp);
  }
  if (o.top_p <= 0 || o.top_p > 1) fail<UsageError>("--top-p {}: use a value in (0, 1]", o.top_p);
  if (o.cpu_limit <= 0 || o.wall_limit <= 0 || o.memory_mib < 16 || o.output_kib < 1) {
    fail<UsageError>(
        "--cpu-limit, --wall-limit must be positive, --memory-limit at least 16 MiB, "
        "--output-limit at least 1 KiB");
  }
  eval::CodeEvalOptions e;
  e.samples = o.reference ? 1 : o.samples;
  e.ks = parse_int_list(o.ks, "-k");
  for (int k : e.ks) {
    if (k > e.samples) {
      fail<UsageError>("-k {}: pass@{} needs at least {} samples per problem; raise -n", k, k, k);
    }
  }
  e.max_tokens = o.max_tokens;
  e.limit = o.limit;
  e.reference = o.reference;
  e.sampling.temperature = static_cast<float>(o.temp >= 0 ? o.temp : (e.samples == 1 ? 0.0 : 0.8));
  e.sampling.top_p = static_cast<float>(o.top_p);
  e.sampling.seed = static_cast<std::uint64_t>(o.seed);
  if (o.jobs < 0) fail<UsageError>("-j {}: use 0 (one per core) or more", o.jobs);
  e.jobs = o.jobs > 0 ? o.jobs : std::max(1, cpu_info().physical_cores);
  e.limits.cpu_seconds = o.cpu_limit;
  e.limits.wall_seconds = o.wall_limit;
  e.limits.memory_bytes = o.memory_mib << 20;
  e.limits.output_bytes = o.output_kib << 10;
  const eval::CodeSuite suite = eval::load_suite(o.set);
  e.rustc = eval::find_rustc(o.rustc);

  std::shared_ptr<engine::LoadedModel> l;
  std::unique_ptr<engine::Session> session;
  if (!o.reference) {
    l = load_model(o.model, o.kernel);
    session = std::make_unique<engine::Session>(l, 0);
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> results(nullptr, std::fclose);
  std::string results_tmp;
  if (!o.results.empty()) {
    results_tmp = o.results + ".partial";
    results.reset(std::fopen(results_tmp.c_str(), "w"));
    if (!results) fail<IoError>("--results {}: cannot write", results_tmp);
  }
  const bool bar = isatty(STDERR_FILENO) != 0 && !o.json;
  int passed_problems = 0;
  const eval::CodeEvalReport r = eval::evaluate_code(
      session.get(), suite, e,
      [&](const eval::ProblemResult& p, std::size_t done, std::size_t total) {
        if (p.passed > 0) ++passed_problems;
        if (results) {
          nlohmann::json runs = nlohmann::json::array();
          for (std::size_t i = 0; i < p.runs.size(); ++i) {
            runs.push_back({{"completion", p.completions[i]},
                            {"status", eval::run_status_name(p.runs[i].status)},
                            {"exit_code", p.runs[i].exit_code},
                            {"seconds", p.runs[i].seconds},
                            {"message", p.runs[i].message}});
          }
          const std::string line =
              nlohmann::json(
                  {{"id", p.id}, {"n", p.runs.size()}, {"passed", p.passed}, {"runs", runs}})
                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
          std::fprintf(results.get(), "%s\n", line.c_str());
          std::fflush(results.get());
        }
        if (bar) {
          progress_bar(done, total,
                       fmt::format("{}/{} problems, {} solved", done, total, passed_problems));
        }
      });
  if (results) {
    std::fflush(results.get());
    fsync(fileno(results.get()));
    results.reset();
    std::filesystem::rename(results_tmp, o.results);
  }
  std::map<std::string, int> statuses;
  for (const auto& p : r.problems) {
    for (const auto& run : p.runs) ++statuses[eval::run_status_name(run.status)];
  }
  if (o.json) {
    nlohmann::json pass_at = nlohmann::json::object();
    for (const auto& [k, v] : r.pass_at) pass_at[fmt::format("pass@{}", k)] = v;
    const nlohmann::json doc = {{"suite", r.suite},
                                {"model", o.reference ? "reference" : l->path().string()},
                                {"problems", r.problems.size()},
                                {"samples", e.samples},
                                {"temperature", e.sampling.temperature},
                                {"pass_at", pass_at},
                                {"statuses", statuses},
                                {"skipped", suite.skipped},
                                {"seconds", r.seconds}};
    std::puts(doc.dump().c_str());
    return;
  }
  fmt::print("suite: {} ({} problems{}), {}, {} sample{} per problem, temperature {}\n", r.suite,
             r.problems.size(),
             suite.skipped.empty() ? "" : fmt::format(", {} skipped", suite.skipped.size()),
             o.reference ? "reference solutions" : "model " + l->path().string(), e.samples,
             e.samples == 1 ? "" : "s", e.sampling.temperature);
  for (const auto& s : suite.skipped) fmt::print("  skipped {}\n", s);
  fmt::print("\n| metric | value |\n| --- | ---: |\n");
  for (const auto& [k, v] : r.pass_at) fmt::print("| pass@{} | {:.2f}% |\n", k, 100 * v);
  for (const auto& [name, count] : statuses) fmt::print("| runs: {} | {} |\n", name, count);
  fmt::print("\n");
  fmt::print(stderr, "{} problems in {:.1f} s\n", r.problems.size(), r.seconds);
}

}  // namespace

void add_eval(CLI::App& app) {
  CLI::App* ev = app.add_subcommand(
      "eval", "Measure a model: bits per byte on held-out text, pass@k on Rust code suites");
  ev->require_subcommand(1);

  auto b = std::make_shared<BpbOptions>();
  CLI::App* bpb = ev->add_subcommand(
      "bpb", "Bits per byte of held-out text (concatenated and per file), beside xz -9e");
  bpb->add_option("-m,--model", b->model, "GGUF model file (default: the shipped model)")
      ->envname("NANOCHAT_ARG_MODEL");
  bpb->add_option("-f,--files", b->inputs, "Files, folders (recursive) or globs to score")
      ->required();
  bpb->add_option("--ext", b->ext,
                  "Extensions of files taken from folders, comma separated ('' for all)")
      ->capture_default_str();
  bpb->add_option("-c,--ctx-size", b->context, "Context in tokens (0: the model's)")
      ->capture_default_str();
  bpb->add_flag("--per-file", b->per_file, "Also print each file's figures");
  bpb->add_flag("--json", b->json, "Print one JSON object and nothing else on stdout");
  b->kernel.add_to(*bpb, false);
  bpb->callback([b] { run_bpb(*b); });

  auto c = std::make_shared<CodeOptions>();
  CLI::App* code = ev->add_subcommand(
      "code", "pass@k on Rust suites: each completion compiled with rustc and run in a sandbox");
  code->add_option("-m,--model", c->model, "GGUF model file (default: the shipped model)")
      ->envname("NANOCHAT_ARG_MODEL");
  code->add_option("--set", c->set,
                   "Suite: humaneval-rs, mbpp-rs, humaneval-x, or a JSON-lines file")
      ->required();
  code->add_option("-k", c->ks, "pass@k to report, comma separated (each <= -n)")
      ->capture_default_str();
  code->add_option("-n,--samples", c->samples, "Completions per problem")->capture_default_str();
  code->add_option("--temp", c->temp, "Temperature (default: 0 for one sample, else 0.8)");
  code->add_option("--top-p", c->top_p, "Top-p sampling")->capture_default_str();
  code->add_option("--max-tokens", c->max_tokens, "Tokens per completion")->capture_default_str();
  code->add_option("--limit", c->limit, "Only the first N problems (0: all)")
      ->capture_default_str();
  code->add_option("-s,--seed", c->seed, "Seed of sample 0 (sample j uses seed + j)")
      ->capture_default_str();
  code->add_flag("--reference", c->reference,
                 "Run the suite's reference solutions through the harness (HumanEval-X)");
  code->add_option("-j,--jobs", c->jobs,
                   "Programs compiled and run at once, beside generation (0: one per core)")
      ->capture_default_str();
  code->add_option("--rustc", c->rustc, "rustc to compile with (default: /usr/bin/rustc)");
  code->add_option("--results", c->results, "Write per-problem results as JSON lines here");
  code->add_flag("--json", c->json, "Print one JSON summary and nothing else on stdout");
  code->add_option("--cpu-limit", c->cpu_limit, "CPU seconds per program run")
      ->capture_default_str();
  code->add_option("--wall-limit", c->wall_limit, "Wall-clock seconds per program run")
      ->capture_default_str();
  code->add_option("--memory-limit", c->memory_mib, "Address space per program run, MiB")
      ->capture_default_str();
  code->add_option("--output-limit", c->output_kib, "Output per program run, KiB")
      ->capture_default_str();
  c->kernel.add_to(*code, false);
  code->callback([c] { run_code(*c); });
}

}  // namespace nanochat::cli
