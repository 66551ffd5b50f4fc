#include "nanochat/zoo/default_model.hpp"

#include "nanochat/util/error.hpp"
#include "nanochat/util/paths.hpp"

namespace nanochat::zoo {
namespace fs = std::filesystem;

std::vector<fs::path> default_model_candidates() {
  std::vector<fs::path> out;
  for (const auto& dir : data_dirs()) out.push_back(dir / "models" / kDefaultModelFile);
  return out;
}

std::optional<fs::path> find_default_model() {
  return find_data_file(fs::path("models") / kDefaultModelFile);
}

std::string model_or_default(const std::string& model) {
  if (!model.empty()) return model;
  if (const auto found = find_default_model()) return found->string();
  std::string searched;
  for (const auto& p : default_model_candidates()) {
    searched += (searched.empty() ? "" : ", ") + p.string();
  }
  fail<UsageError>(
      "-m: no model given and the default model {} is not installed (looked in {}); pass -m "
      "FILE.gguf, set NANOCHAT_ARG_MODEL, or build from the repository (its models/ folder "
      "holds it)",
      kDefaultModelFile, searched);
}

}  // namespace nanochat::zoo
