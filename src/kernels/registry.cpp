#include "nanochat/kernels/registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <string_view>

#include "nanochat/kernels/isa_units.hpp"
#include "nanochat/util/aligned.hpp"
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

bool avx512_uses_vbmi() {
  static const bool use = optional_extension(
      unit_supported(isa_units::k_avx512_vbmi, cpu_info().features), "NANOCHAT_NO_VBMI");
  return use;
}

std::span<const Layout> kernel_layouts(Isa isa) {
  static constexpr Layout kTq2[] = {Layout::kTq2};
  static constexpr Layout kStride64[] = {Layout::kStride64};
  static constexpr Layout kWithBase3[] = {Layout::kStride64, Layout::kBase3};
  switch (kernel_info(isa).layout) {
    case Layout::kTq2:
      return kTq2;
    case Layout::kStride64:
      if (isa == Isa::kAvx512 && avx512_uses_vbmi()) return kWithBase3;
      return kStride64;
    case Layout::kBase3:
      break;
  }
  fail<InternalError>("kernel_layouts: kernel {} has no default 2-bit layout",
                      kernel_info(isa).name);
}

bool kernel_has_layout(Isa isa, Layout layout) {
  const std::span<const Layout> layouts = kernel_layouts(isa);
  return std::find(layouts.begin(), layouts.end(), layout) != layouts.end();
}

std::optional<Layout> layout_override(std::optional<Isa> isa) {
  const char* env = std::getenv("NANOCHAT_LAYOUT");
  if (env == nullptr || *env == '\0') return std::nullopt;
  const auto layout = parse_layout(env);
  if (!layout) {
    std::string names;
    for (Layout l : kLayouts) {
      names += fmt::format("{}{}", names.empty() ? "" : ", ", layout_name(l));
    }
    fail<UsageError>("NANOCHAT_LAYOUT={}: unknown weight layout; use one of {}", env, names);
  }
  std::string runs;
  for (Isa candidate : available_isas()) {
    if (isa && candidate != *isa) continue;
    if (kernel_has_layout(candidate, *layout)) return layout;
    for (Layout l : kernel_layouts(candidate)) {
      runs +=
          fmt::format("{}{} ({})", runs.empty() ? "" : ", ", layout_name(l), isa_name(candidate));
    }
  }
  fail<UsageError>(
      "NANOCHAT_LAYOUT={}: no kernel this run can use multiplies that layout{}; available: {}", env,
      *layout == Layout::kBase3 ? " (base3 needs AVX-512 with VBMI, and NANOCHAT_NO_VBMI unset)"
                                : "",
      runs);
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

std::uint8_t* thread_scratch(std::size_t bytes) {
  thread_local AlignedBuffer<std::uint8_t> scratch;
  if (scratch.size() < bytes) scratch = AlignedBuffer<std::uint8_t>::uninitialized(bytes);
  return scratch.data();
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
