// What the CPU offers: ISA features (CPUID + XGETBV, so a feature the OS does not save state for
// counts as absent), topology and caches. Detected once; thread-safe to read afterwards.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace nanochat {

struct CpuFeatures {
  bool sse42 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx_vnni = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx512vbmi = false;
  bool gfni = false;        // gf2p8affineqb: the AVX-512 kernel unpacks 2-bit weights with it
  bool avx512bf16 = false;  // vdpbf16ps: bf16 products (the trainer's backward GEMMs)

  // By GCC's -m spelling ("avx512vnni", "avxvnni", "gfni", ...). Throws InternalError for a name
  // it does not know (a unit compiled with an extension nobody checks for would be a bug).
  bool has(std::string_view gcc_name) const;
};

struct CpuInfo {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ...
  std::string brand;   // marketing name from CPUID leaves 0x80000002..4
  int family = 0;
  int model = 0;
  int stepping = 0;
  CpuFeatures features;
  int logical_cpus = 1;
  int physical_cores = 1;  // distinct (package, core) pairs from sysfs
  int numa_nodes = 1;      // from libnuma when present
  std::size_t l1d_bytes = 0;
  std::size_t l2_bytes = 0;
  std::size_t l3_bytes = 0;

  // Stable identifier for caches of per-machine measurements (autotuner): vendor, family,
  // model, stepping, the ISA features and core count, with characters safe for file names.
  std::string signature() const;
  // Space-separated list of the ISA features found, e.g. "avx2 fma avx512f ...".
  std::string feature_list() const;
};

// Detected on first call.
const CpuInfo& cpu_info();

}  // namespace nanochat
