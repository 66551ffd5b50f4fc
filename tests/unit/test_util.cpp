#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "nanochat/util/aligned.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/numa.hpp"
#include "nanochat/util/stats.hpp"

namespace nanochat {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("nanochat-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Aligned, AlignmentAndZeroFill) {
  for (std::size_t n : {1u, 63u, 64u, 1000u, 3u << 20}) {
    AlignedBuffer<std::uint8_t> buf(n);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % kCacheLine, 0u) << n;
    for (std::size_t i = 0; i < n; i += 997) EXPECT_EQ(buf[i], 0);
  }
  AlignedBuffer<std::uint8_t> big(std::size_t{4} << 20);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big.data()) % (std::size_t{2} << 20), 0u);
}

TEST(Aligned, NumaPlacementFallsBackCleanly) {
  // Node 0 always exists; on a one-node machine placement is a no-op and must not fail.
  AlignedBuffer<float> buf(1 << 20, 0);
  buf[12345] = 1.5f;
  EXPECT_EQ(buf[12345], 1.5f);
  EXPECT_GE(numa_node_count(), 1);
  if (numa_node_count() == 1) {
    EXPECT_FALSE(numa_placement_available());
  }
}

TEST(Cpu, FeaturesAreConsistent) {
  const CpuInfo& cpu = cpu_info();
  EXPECT_GE(cpu.physical_cores, 1);
  EXPECT_LE(cpu.physical_cores, cpu.logical_cpus);
  const CpuFeatures& f = cpu.features;
  EXPECT_TRUE(!f.avx2 || f.avx);
  EXPECT_TRUE(!(f.avx512bw || f.avx512vnni || f.avx512vbmi) || f.avx512f);
  EXPECT_FALSE(cpu.signature().empty());
  EXPECT_EQ(cpu.signature().find('/'), std::string::npos);
}

TEST(File, AtomicWriteReplacesAndLeavesNoTemp) {
  const fs::path dir = temp_dir("file");
  const fs::path target = dir / "sub" / "out.txt";
  write_file_atomic(target, "first");
  EXPECT_EQ(read_file(target), "first");
  write_file_atomic(target, "second, longer");
  EXPECT_EQ(read_file(target), "second, longer");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(target.parent_path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);  // no temporary left behind
  fs::remove_all(dir);
}

TEST(File, ReadMissingFileNamesThePath) {
  try {
    (void)read_file("/nonexistent/nanochat/file.bin");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/nanochat/file.bin"), std::string::npos);
  }
}

TEST(File, CacheDirHonoursEnvironment) {
  ::setenv("NANOCHAT_CACHE", "/tmp/nc-cache", 1);
  EXPECT_EQ(cache_dir(), fs::path("/tmp/nc-cache"));
  ::unsetenv("NANOCHAT_CACHE");
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(cache_dir(), fs::path("/tmp/xdg/nanochat"));
  ::unsetenv("XDG_CACHE_HOME");
  const std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  ::setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(cache_dir(), fs::path("/home/someone/.cache/nanochat"));
  ::setenv("HOME", home.c_str(), 1);
}

TEST(Stats, MedianAndSpread) {
  const Summary s = summarize({5, 1, 3, 2, 4});
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_DOUBLE_EQ(s.spread, (4.0 - 2.0) / 2 / 3);
  EXPECT_EQ(summarize({}).n, 0u);
}

}  // namespace
}  // namespace nanochat
