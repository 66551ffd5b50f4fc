// Where nanochat's data files live: <prefix>/share/nanochat/ once installed. The build tree gets
// the same layout (<build>/share/nanochat/, beside <build>/src/nanochat), so a freshly built
// binary finds its data exactly as an installed one does.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

namespace nanochat {

// The share/nanochat/ folders to search, in order: those given to add_data_dir, the one beside
// the running binary (<dir of the binary>/../share/nanochat), then the configured install
// prefix's.
std::vector<std::filesystem::path> data_dirs();

// Searches `dir` first (the Python package's own share/nanochat, whose interpreter is not
// nanochat's binary). Thread-safe.
void add_data_dir(const std::filesystem::path& dir);

// The first data_dirs()/`relative` that is a regular file.
std::optional<std::filesystem::path> find_data_file(const std::filesystem::path& relative);

}  // namespace nanochat
