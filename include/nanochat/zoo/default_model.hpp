// The default model: the GGUF file nanochat ships (models/nanochat-rust.gguf, trained by
// nanochat itself on Rust code), used by every command that takes -m when none is given.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nanochat::zoo {

// The shipped file's name, in the source tree's models/ and in <prefix>/share/nanochat/models/.
inline constexpr const char* kDefaultModelFile = "nanochat-rust.gguf";

// Where the default model is looked for, in order: models/ under each of util/paths.hpp's
// data_dirs() (beside the running binary, in the build tree or an installed prefix, then the
// configured install prefix).
std::vector<std::filesystem::path> default_model_candidates();

// The first candidate that exists, if any.
std::optional<std::filesystem::path> find_default_model();

// `model` when it is not empty (what -m or NANOCHAT_ARG_MODEL gave), else the default model.
// Throws UsageError naming -m, the places searched and what to do when there is none.
std::string model_or_default(const std::string& model);

}  // namespace nanochat::zoo
