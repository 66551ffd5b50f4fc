#include "nanochat/kernels/isa.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "nanochat/kernels/isa_units.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view text) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (text == isa_name(isa)) return isa;
  }
  return std::nullopt;
}

namespace {

std::span<const std::string_view> unit_of(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return isa_units::k_avx2;
    case Isa::kAvx512:
      return isa_units::k_avx512;
    case Isa::kScalar:
      break;
  }
  return {};
}

}  // namespace

bool unit_supported(std::span<const std::string_view> unit, const CpuFeatures& f) {
  return std::all_of(unit.begin(), unit.end(), [&](std::string_view x) { return f.has(x); });
}

bool isa_supported(Isa isa, const CpuFeatures& f) { return unit_supported(unit_of(isa), f); }

std::string isa_requirements(Isa isa) {
  std::string out;
  for (std::string_view x : unit_of(isa))
    out += std::string(out.empty() ? "" : " ") + std::string(x);
  return out.empty() ? "nothing" : out;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kScalar}) {
    if (isa_supported(isa, cpu_info().features)) out.push_back(isa);
  }
  return out;
}

std::optional<Isa> isa_override(std::string_view flag_value) {
  std::string source = "--isa";
  std::string value(flag_value);
  if (value.empty()) {
    const char* env = std::getenv("NANOCHAT_ISA");
    if (env == nullptr || *env == '\0') return std::nullopt;
    source = "NANOCHAT_ISA";
    value = env;
  }
  const auto isa = parse_isa(value);
  if (!isa) {
    fail<UsageError>("{}={}: unknown instruction set; use scalar, avx2 or avx512", source, value);
  }
  if (!isa_supported(*isa, cpu_info().features)) {
    std::string have;
    for (Isa a : available_isas()) have += std::string(have.empty() ? "" : ", ") + isa_name(a);
    fail<UsageError>("{}={}: this CPU lacks {}, which that path needs; available here: {}", source,
                     value, isa_requirements(*isa), have);
  }
  return isa;
}

Isa default_isa(std::string_view flag_value) {
  if (auto forced = isa_override(flag_value)) return *forced;
  return available_isas().front();
}

}  // namespace nanochat::kernels
