// Instruction-set paths and how one is chosen: the best the CPU has (CPUID + XGETBV), unless
// NANOCHAT_ISA=scalar|avx2|avx512 or --isa forces one — which must be a path the CPU has.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nanochat {
struct CpuFeatures;
}

namespace nanochat::kernels {

enum class Isa { kScalar, kAvx2, kAvx512 };

const char* isa_name(Isa isa);
// Parses "scalar", "avx2" or "avx512"; nullopt for anything else.
std::optional<Isa> parse_isa(std::string_view text);

// Whether this CPU can run the path: every extension its ISA unit is compiled with (the table in
// src/CMakeLists.txt, generated into isa_units.hpp), with the OS saving the registers' state.
bool isa_supported(Isa isa, const CpuFeatures& features);
// What the path needs, for error messages ("avx512f avx512bw ...").
std::string isa_requirements(Isa isa);
// Whether the CPU has every extension an ISA unit (isa_units.hpp) was compiled with.
bool unit_supported(std::span<const std::string_view> unit, const CpuFeatures& features);

// All paths this CPU can run, fastest first.
std::vector<Isa> available_isas();

// Validated ISA override: `flag_value` (from --isa, empty if unset) wins over NANOCHAT_ISA.
// Throws UsageError naming the flag or variable when the value is unknown or not available on
// this CPU. nullopt when nothing is forced.
std::optional<Isa> isa_override(std::string_view flag_value = {});

// The forced ISA if any, else the fastest available.
Isa default_isa(std::string_view flag_value = {});

}  // namespace nanochat::kernels
