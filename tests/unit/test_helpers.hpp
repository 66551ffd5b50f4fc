// Helpers shared by the unit tests.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "nanochat/kernels/dispatch.hpp"

namespace nanochat::test_support {

// A fresh, empty folder under the temporary directory, unique to this process and `name`.
inline std::filesystem::path temp_dir(const std::string& name) {
  std::filesystem::path p =
      std::filesystem::temp_directory_path() / fmt::format("nanochat-test-{}-{}", ::getpid(), name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Kernel options that neither read nor write an autotune cache and use the built-in plans, so
// tests are fast and independent of the machine's cache.
inline kernels::KernelOptions quiet_kernels(int threads) {
  kernels::KernelOptions o;
  o.threads = threads;
  o.tune = kernels::TuneMode::kOff;
  o.tune_cache.clear();
  return o;
}

}  // namespace nanochat::test_support
