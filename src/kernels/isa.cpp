#include "nanochat/kernels/isa.hpp"

#include <cstdlib>
#include <string>

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

bool isa_supported(Isa isa, const CpuFeatures& f) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c;
    case Isa::kAvx512:
      return f.avx512f && f.avx512bw && f.avx512vnni;
  }
  return false;
}

const char* isa_requirements(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "nothing";
    case Isa::kAvx2:
      return "AVX2, FMA and F16C";
    case Isa::kAvx512:
      return "AVX-512 F, BW and VNNI";
  }
  return "?";
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
