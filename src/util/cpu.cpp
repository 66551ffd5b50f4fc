#include "nanochat/util/cpu.hpp"

#include <cpuid.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

#include "nanochat/util/error.hpp"
#include "nanochat/util/numa.hpp"

namespace nanochat {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf = 0) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
  return r;
}

// XCR0: which register states the OS saves on context switch.
std::uint64_t xgetbv0() {
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (std::uint64_t{hi} << 32) | lo;
}

bool bit(unsigned reg, int n) { return ((reg >> n) & 1u) != 0; }

CpuFeatures detect_features() {
  CpuFeatures f;
  const unsigned max_leaf = cpuid(0).a;
  const Regs l1 = cpuid(1);
  f.sse42 = bit(l1.c, 20);
  const bool osxsave = bit(l1.c, 27);
  std::uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;              // SSE + AVX state
  const bool zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  f.avx = ymm_ok && bit(l1.c, 28);
  f.fma = f.avx && bit(l1.c, 12);
  f.f16c = f.avx && bit(l1.c, 29);
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    f.avx2 = f.avx && bit(l7.b, 5);
    f.avx512f = zmm_ok && bit(l7.b, 16);
    f.avx512dq = f.avx512f && bit(l7.b, 17);
    f.avx512bw = f.avx512f && bit(l7.b, 30);
    f.avx512vl = f.avx512f && bit(l7.b, 31);
    f.avx512vbmi = f.avx512f && bit(l7.c, 1);
    f.avx512vnni = f.avx512f && bit(l7.c, 11);
    f.gfni = bit(l7.c, 8);
    const Regs l71 = cpuid(7, 1);
    f.avx_vnni = f.avx2 && bit(l71.a, 4);
    f.avx512bf16 = f.avx512f && bit(l71.a, 5);
  }
  return f;
}

std::string read_first_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::size_t parse_cache_size(const std::string& text) {
  // sysfs writes sizes like "48K" or "32768K" or "2M".
  std::size_t value = 0;
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    value = value * 10 + static_cast<std::size_t>(text[i] - '0');
    ++i;
  }
  if (i < text.size() && (text[i] == 'K' || text[i] == 'k')) value <<= 10;
  if (i < text.size() && (text[i] == 'M' || text[i] == 'm')) value <<= 20;
  return value;
}

void detect_topology(CpuInfo& info) {
  namespace fs = std::filesystem;
  info.logical_cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::set<std::pair<std::string, std::string>> cores;
  std::error_code ec;
  for (int cpu = 0; cpu < info.logical_cpus; ++cpu) {
    const fs::path topo = fmt::format("/sys/devices/system/cpu/cpu{}/topology", cpu);
    if (!fs::exists(topo, ec)) continue;
    cores.emplace(read_first_line(topo / "physical_package_id"), read_first_line(topo / "core_id"));
  }
  info.physical_cores = cores.empty() ? info.logical_cpus : static_cast<int>(cores.size());

  const fs::path cache_dir = "/sys/devices/system/cpu/cpu0/cache";
  for (int index = 0; index < 8; ++index) {
    const fs::path dir = cache_dir / fmt::format("index{}", index);
    if (!fs::exists(dir, ec)) break;
    const std::string level = read_first_line(dir / "level");
    const std::string type = read_first_line(dir / "type");
    const std::size_t size = parse_cache_size(read_first_line(dir / "size"));
    if (level == "1" && type == "Data") info.l1d_bytes = size;
    if (level == "2") info.l2_bytes = size;
    if (level == "3") info.l3_bytes = size;
  }
  // Without sysfs's cache folders (some VMs have none), glibc's answer from CPUID. An L3 above
  // 128 MiB is no single core's cache but a VM's aggregate (one here reported 508 MiB); it stays
  // unknown rather than sizing buffers (the bandwidth probe reads 8x L3) by it.
  const auto from_glibc = [](int name) {
    const long bytes = sysconf(name);
    return bytes > 0 ? static_cast<std::size_t>(bytes) : std::size_t{0};
  };
  if (info.l1d_bytes == 0) info.l1d_bytes = from_glibc(_SC_LEVEL1_DCACHE_SIZE);
  if (info.l2_bytes == 0) info.l2_bytes = from_glibc(_SC_LEVEL2_CACHE_SIZE);
  if (const std::size_t l3 = from_glibc(_SC_LEVEL3_CACHE_SIZE);
      info.l3_bytes == 0 && l3 <= (std::size_t{128} << 20)) {
    info.l3_bytes = l3;
  }
  info.numa_nodes = numa_node_count();
}

std::string safe_for_filename(std::string text) {
  for (char& c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  return text;
}

CpuInfo detect() {
  CpuInfo info;
  const Regs l0 = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor + 0, &l0.b, 4);
  std::memcpy(vendor + 4, &l0.d, 4);
  std::memcpy(vendor + 8, &l0.c, 4);
  info.vendor = vendor;

  const Regs l1 = cpuid(1);
  const unsigned base_family = (l1.a >> 8) & 0xf;
  const unsigned base_model = (l1.a >> 4) & 0xf;
  info.family =
      static_cast<int>(base_family == 0xf ? base_family + ((l1.a >> 20) & 0xff) : base_family);
  info.model = static_cast<int>((base_family == 0x6 || base_family == 0xf)
                                    ? (((l1.a >> 16) & 0xf) << 4) | base_model
                                    : base_model);
  info.stepping = static_cast<int>(l1.a & 0xf);

  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i + 0, &r.a, 4);
      std::memcpy(brand + 16 * i + 4, &r.b, 4);
      std::memcpy(brand + 16 * i + 8, &r.c, 4);
      std::memcpy(brand + 16 * i + 12, &r.d, 4);
    }
    info.brand = brand;
    const auto first = info.brand.find_first_not_of(' ');
    const auto last = info.brand.find_last_not_of(' ');
    info.brand = first == std::string::npos ? "" : info.brand.substr(first, last - first + 1);
  }
  info.features = detect_features();
  detect_topology(info);
  return info;
}

}  // namespace

bool CpuFeatures::has(std::string_view name) const {
  const std::pair<std::string_view, bool> all[] = {
      {"sse4.2", sse42},
      {"avx", avx},
      {"avx2", avx2},
      {"fma", fma},
      {"f16c", f16c},
      {"avxvnni", avx_vnni},
      {"avx512f", avx512f},
      {"avx512bw", avx512bw},
      {"avx512vl", avx512vl},
      {"avx512dq", avx512dq},
      {"avx512vnni", avx512vnni},
      {"avx512vbmi", avx512vbmi},
      {"gfni", gfni},
      {"avx512bf16", avx512bf16},
  };
  for (const auto& [n, present] : all) {
    if (n == name) return present;
  }
  fail<InternalError>("CpuFeatures::has: unknown extension '{}'", name);
}

std::string CpuInfo::feature_list() const {
  const std::pair<bool, const char*> all[] = {
      {features.sse42, "sse4.2"},
      {features.avx, "avx"},
      {features.avx2, "avx2"},
      {features.fma, "fma"},
      {features.f16c, "f16c"},
      {features.avx_vnni, "avx-vnni"},
      {features.avx512f, "avx512f"},
      {features.avx512bw, "avx512bw"},
      {features.avx512vl, "avx512vl"},
      {features.avx512dq, "avx512dq"},
      {features.avx512vnni, "avx512vnni"},
      {features.avx512vbmi, "avx512vbmi"},
      {features.avx512bf16, "avx512bf16"},
      {features.gfni, "gfni"},
  };
  std::string out;
  for (const auto& [present, name] : all) {
    if (!present) continue;
    if (!out.empty()) out += ' ';
    out += name;
  }
  return out;
}

std::string CpuInfo::signature() const {
  const auto& f = features;
  const unsigned bits = (f.avx2 ? 1u : 0u) | (f.avx512f ? 2u : 0u) | (f.avx512bw ? 4u : 0u) |
                        (f.avx512vnni ? 8u : 0u) | (f.avx512vbmi ? 16u : 0u) |
                        (f.avx_vnni ? 32u : 0u) | (f.gfni ? 64u : 0u);
  return safe_for_filename(fmt::format("{}-f{}m{}s{}-isa{:x}-c{}", vendor, family, model, stepping,
                                       bits, physical_cores));
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

}  // namespace nanochat
