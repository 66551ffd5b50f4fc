#include "nanochat/kernels/registry.hpp"

#include <array>

namespace nanochat::kernels {

std::span<const KernelInfo> kernel_registry() {
  static const std::array<KernelInfo, 3> table = {scalar_kernel(), avx2_kernel(), avx512_kernel()};
  return table;
}

const KernelInfo& kernel_info(Isa isa) {
  for (const KernelInfo& k : kernel_registry()) {
    if (k.isa == isa) return k;
  }
  return kernel_registry().front();
}

}  // namespace nanochat::kernels
