#include "nanochat/model/tensor_names.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace nanochat::model::tensors {
namespace {

constexpr std::string_view kBlockPrefix = "blk.";
constexpr std::string_view kWeightSuffix = ".weight";

}  // namespace

std::string block(std::int64_t layer, std::string_view part) {
  return fmt::format("{}{}.{}{}", kBlockPrefix, layer, part, kWeightSuffix);
}

std::string_view part_of(std::string_view name) {
  if (!name.starts_with(kBlockPrefix) || !name.ends_with(kWeightSuffix)) return {};
  name.remove_prefix(kBlockPrefix.size());
  name.remove_suffix(kWeightSuffix.size());
  const std::size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return {};
  if (!std::all_of(name.begin(), name.begin() + static_cast<std::ptrdiff_t>(dot),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return {};
  }
  return name.substr(dot + 1);
}

bool is_ternary_layer(std::string_view name) {
  static constexpr std::array<std::string_view, 7> kTernaryParts = {
      kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnGate, kFfnUp, kFfnDown};
  const std::string_view part = part_of(name);
  return name == kOutput ||
         std::find(kTernaryParts.begin(), kTernaryParts.end(), part) != kTernaryParts.end();
}

std::string scale_of(std::string_view weight) {
  if (weight.ends_with(kWeightSuffix)) weight.remove_suffix(kWeightSuffix.size());
  return std::string(weight) + ".scale";
}

}  // namespace nanochat::model::tensors
