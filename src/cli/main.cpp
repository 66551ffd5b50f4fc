// nanochat: one binary, CLI11 subcommands. main() is the only place that turns errors into an
// exit code and one line on stderr.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/log.hpp"
#include "nanochat/version.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace {

std::string version_line() {
  const auto model = nanochat::zoo::find_default_model();
  return fmt::format(
      "nanochat {} (commit {}, {}, {} build{}{})\ndefault model: {}", nanochat::build::kVersion,
      nanochat::build::kGitCommit, nanochat::build::kCompiler, nanochat::build::kBuildType,
      *nanochat::build::kSanitizers ? ", sanitizers " : "", nanochat::build::kSanitizers,
      model ? model->string()
            : fmt::format("none ({} not found; pass -m)", nanochat::zoo::kDefaultModelFile));
}

// CLI11 errors as one line: what is wrong and which --help to read (that of the deepest
// subcommand given, e.g. 'nanochat benchmark kernels --help').
std::string one_line_failure(const CLI::App* app, const CLI::Error& e) {
  std::string name = app->get_name();
  for (const CLI::App* sub = app; !sub->get_subcommands().empty();) {
    sub = sub->get_subcommands().front();
    name += " " + sub->get_name();
  }
  return fmt::format("nanochat: {}; see '{} --help'\n", e.what(), name);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nanochat: ternary (1.58-bit) language models on the CPU", "nanochat"};
  app.set_version_flag("--version", version_line(),
                       "Print version, commit, compiler and build type");
  app.require_subcommand(1);
  app.fallthrough();  // -v and --log-format work after the subcommand too
  app.failure_message(one_line_failure);
  int verbosity = 0;
  std::string log_format = "text";
  app.add_flag("-v,--verbose", verbosity, "More log output on stderr (repeat for more)");
  app.add_option("--log-format", log_format, "Log lines as 'text' or 'json'")
      ->capture_default_str();
  app.parse_complete_callback(
      [&] { nanochat::init_logging(verbosity, nanochat::parse_log_format(log_format)); });

  nanochat::cli::add_system_info(app);
  nanochat::cli::add_chat(app);
  nanochat::cli::add_generate(app);
  nanochat::cli::add_perplexity(app);
  nanochat::cli::add_train(app);
  nanochat::cli::add_eval(app);
  nanochat::cli::add_info(app);
  nanochat::cli::add_tokenize(app);
  nanochat::cli::add_tokenizer(app);
  nanochat::cli::add_model(app);
  nanochat::cli::add_benchmark(app);

  // llama.cpp spells the system prompt flag -sys, which CLI11 cannot declare: rewrite it.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args) {
    if (a == "-sys") a = "--system-prompt";
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order

  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const nanochat::cli::Interrupted&) {
    return 130;
  } catch (const nanochat::UsageError& e) {
    std::fprintf(stderr, "nanochat: %s\n", e.what());
    return 2;
  } catch (const nanochat::Error& e) {
    std::fprintf(stderr, "nanochat: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "nanochat: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanochat: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
