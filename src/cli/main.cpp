// nanochat: one binary, CLI11 subcommands. main() is the only place that turns errors into an
// exit code and one line on stderr.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
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

// The deepest subcommand given, e.g. 'benchmark kernels'.
const CLI::App* deepest(const CLI::App* app, std::string& name) {
  name = app->get_name();
  for (; !app->get_subcommands().empty();) {
    app = app->get_subcommands().front();
    name += " " + app->get_name();
  }
  return app;
}

// CLI11 parse errors as one line naming what is wrong (the unknown command, the environment
// variable that holds a bad value) and which --help to read.
std::string one_line_failure(const CLI::App& app, const CLI::ParseError& e,
                             const std::vector<std::string>& args) {
  std::string name;
  const CLI::App* sub = deepest(&app, name);
  if (sub == &app) {  // no command recognised
    std::vector<std::string> commands;
    for (const CLI::App* c : app.get_subcommands({})) commands.push_back(c->get_name());
    const std::string list = fmt::format("{}", fmt::join(commands, ", "));
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i].empty() || args[i][0] == '-') continue;
      if (i > 0 && args[i - 1] == "--log-format") continue;
      return fmt::format("unknown command '{}'; commands are {}", args[i], list);
    }
    if (e.get_name() == "RequiredError") {
      return fmt::format("no command given; commands are {}", list);
    }
  }
  const std::string what = e.what();
  for (const CLI::Option* opt : sub->get_options()) {
    const std::string& env = opt->get_envname();
    const char* value = env.empty() ? nullptr : std::getenv(env.c_str());
    if (value == nullptr || what.find(opt->get_name()) == std::string::npos) continue;
    const bool on_command_line = std::any_of(args.begin(), args.end(), [&](const std::string& a) {
      return opt->check_name(a.substr(0, a.find('=')));
    });
    if (!on_command_line) {
      return fmt::format(
          "{}={}: not a valid value for {} (from the environment; unset it or fix "
          "it)",
          env, value, opt->get_name());
    }
  }
  return fmt::format("{}; see '{} --help'", what, name);
}

}  // namespace

// The try covering the whole body also catches what setting up the commands or reporting an error
// throws: one line on stderr, not std::terminate's abort.
int main(int argc, char** argv) try {
  CLI::App app{"nanochat: ternary (1.58-bit) language models on the CPU", "nanochat"};
  app.set_version_flag("--version", version_line(),
                       "Print version, commit, compiler and build type");
  app.require_subcommand(1);
  app.fallthrough();  // -v and --log-format work after the subcommand too
  int verbosity = 0;
  std::string log_format = "text";
  app.add_flag("-v,--verbose", verbosity, "More log output on stderr (repeat for more)");
  app.add_option("--log-format", log_format, "Log lines as 'text' or 'json'")
      ->capture_default_str();
  bool pull = false;
  app.add_flag("--pull", pull,
               "Let -m download a registry name or address that is not in the cache yet")
      ->envname("NANOCHAT_PULL");
  bool no_weight_cache = false;
  app.add_flag("--no-weight-cache", no_weight_cache,
               "Repack the weights at every load instead of mapping the copy kept in the cache "
               "directory (and keep none); NANOCHAT_NO_WEIGHT_CACHE=1 does the same");
  app.parse_complete_callback([&] {
    // The library reads the variable (Python and the server load models too).
    if (no_weight_cache) ::setenv("NANOCHAT_NO_WEIGHT_CACHE", "1", 1);
    nanochat::init_logging(verbosity, nanochat::parse_log_format(log_format));
    nanochat::cli::set_pull(pull);
  });

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
  nanochat::cli::add_serve(app);
  nanochat::cli::add_download(app);
  nanochat::cli::add_models(app);
  nanochat::cli::add_benchmark(app);

  // llama.cpp spells the system prompt flag -sys and the server's slots -np, which CLI11
  // cannot declare: rewrite them.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args) {
    if (a == "-sys") a = "--system-prompt";
    if (a == "-np") a = "--parallel";
  }
  const std::vector<std::string> given = args;
  // An empty model path (an unset shell variable in `-m "$MODEL"`) would otherwise mean "no -m"
  // and silently run the default model.
  for (std::size_t i = 0; i < given.size(); ++i) {
    if (((given[i] == "-m" || given[i] == "--model") && i + 1 < given.size() &&
         given[i + 1].empty()) ||
        given[i] == "--model=") {
      std::fprintf(stderr,
                   "nanochat: -m '': the model path is empty; leave -m out to use the default "
                   "model\n");
      return 2;
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order

  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "nanochat: %s\n", one_line_failure(app, e, given).c_str());
    return 2;  // every usage error, as CLI11's own errors and the commands' UsageError
  } catch (const nanochat::cli::Interrupted&) {
    return 130;
  } catch (const nanochat::InvalidArgument& e) {  // a library parameter, named as the CLI's flag
    const std::string flag = nanochat::cli::flag_for(e.parameter());
    std::fprintf(stderr, "nanochat: %s%s%s: %s\n", flag.c_str(), e.value().empty() ? "" : " ",
                 e.value().c_str(), e.problem().c_str());
    return 2;
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
    std::fprintf(stderr, "nanochat: internal error (a bug in nanochat; please report it): %s\n",
                 e.what());
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nanochat: internal error (a bug in nanochat; please report it): %s\n",
               e.what());
  return 1;
}
