#include "nanochat/kernels/registry.hpp"

#include <array>
#include <cstdlib>
#include <string_view>

#include "nanochat/kernels/isa_units.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"

namespace nanochat::kernels {

std::span<const KernelInfo> kernel_registry() {
  static const std::array<KernelInfo, 3> table = {scalar_kernel(), avx2_kernel(), avx512_kernel()};
  return table;
}

namespace {

// An optional instruction set the CPU has, unless the environment variable `off` is set to
// something other than "" or "0".
bool optional_extension(bool cpu_has, const char* off) {
  const char* value = std::getenv(off);
  const bool disabled =
      value != nullptr && !std::string_view(value).empty() && std::string_view(value) != "0";
  return cpu_has && !disabled;
}

}  // namespace

bool avx512_uses_gfni() {
  static const bool use = optional_extension(
      unit_supported(isa_units::k_avx512_gfni, cpu_info().features), "NANOCHAT_NO_GFNI");
  return use;
}

bool avx2_uses_avx_vnni() {
  static const bool use = optional_extension(
      unit_supported(isa_units::k_avx2_vnni, cpu_info().features), "NANOCHAT_NO_AVX_VNNI");
  return use;
}

void tile_driver_error(const char* what, std::int64_t a, std::int64_t b) {
  if (b >= 0) fail<InternalError>("{} ({} vs {})", what, a, b);
  fail<InternalError>("{} ({})", what, a);
}

int one_variant() { return 1; }

const char* plain_variant(int) { return "plain"; }

const KernelInfo& kernel_info(Isa isa) {
  for (const KernelInfo& k : kernel_registry()) {
    if (k.isa == isa) return k;
  }
  return kernel_registry().front();
}

}  // namespace nanochat::kernels
