#include "nanochat/kernels/registry.hpp"

#include <array>
#include <cstdlib>
#include <string_view>

#include "nanochat/util/cpu.hpp"

namespace nanochat::kernels {

std::span<const KernelInfo> kernel_registry() {
  static const std::array<KernelInfo, 3> table = {scalar_kernel(), avx2_kernel(), avx512_kernel()};
  return table;
}

bool avx512_uses_gfni() {
  static const bool use = [] {
    const char* off = std::getenv("NANOCHAT_NO_GFNI");
    return cpu_info().features.gfni && (off == nullptr || std::string_view(off).empty());
  }();
  return use;
}

bool avx2_uses_avx_vnni() {
  static const bool use = [] {
    const char* off = std::getenv("NANOCHAT_NO_AVX_VNNI");
    return cpu_info().features.avx_vnni && (off == nullptr || std::string_view(off).empty());
  }();
  return use;
}

const KernelInfo& kernel_info(Isa isa) {
  for (const KernelInfo& k : kernel_registry()) {
    if (k.isa == isa) return k;
  }
  return kernel_registry().front();
}

}  // namespace nanochat::kernels
