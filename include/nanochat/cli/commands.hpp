// Registration of nanochat's subcommands. Each adds itself to the CLI11 app with a callback that
// does the work; errors propagate as nanochat::Error to main.
#pragma once

#include <CLI/CLI.hpp>

namespace nanochat::cli {

void add_system_info(CLI::App& app);
void add_benchmark(CLI::App& app);
void add_info(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_tokenizer(CLI::App& app);
void add_generate(CLI::App& app);
void add_chat(CLI::App& app);
void add_model(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_serve(CLI::App& app);
// `download` and `models`.
void add_download(CLI::App& app);
void add_models(CLI::App& app);
// `train` and `export`.
void add_train(CLI::App& app);
void add_eval(CLI::App& app);
// `benchmark model`, added under `benchmark` by add_benchmark.
void add_benchmark_model(CLI::App& bench);
// `benchmark train`, likewise.
void add_benchmark_train(CLI::App& bench);

}  // namespace nanochat::cli
