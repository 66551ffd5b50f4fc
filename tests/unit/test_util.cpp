#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
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

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

void touch(const fs::path& path) { std::ofstream(path) << "partial"; }

TEST(File, StaleTemporariesOfDeadWritersAreRemoved) {
  const fs::path dir = temp_dir("stale");
  // Left by writers that died: AtomicFile's exact pattern, nobody holding a lock.
  touch(dir / ".step-00000006.nckpt.tmp-AbC123");
  touch(dir / ".out.txt.tmp-Zz9yX8");
  // Not nanochat's pattern: other programs' files and near misses stay.
  const std::set<std::string> others = {".tmp-abcdef",         ".x.tmp-abc12",   "x.tmp-abcdef",
                                        ".x.tmp-abc$ef",       ".x.tmp-abcdefg", ".x.tmp-",
                                        "step-00000006.nckpt", ".x.gguf.partial"};
  for (const auto& name : others) touch(dir / name);
  fs::create_directory(dir / ".d.tmp-abcdef");  // a folder, not a file
  // A live writer in this process: AtomicFile holds the lock on its temporary.
  AtomicFile live(dir / "live.bin");
  live.write(std::string_view("being written"));

  EXPECT_EQ(remove_stale_temporaries(dir, "out.txt"), 1u);  // only that target's
  EXPECT_TRUE(fs::exists(dir / ".step-00000006.nckpt.tmp-AbC123"));
  EXPECT_EQ(remove_stale_temporaries(dir), 1u);
  std::set<std::string> want = others;
  want.insert(".d.tmp-abcdef");
  std::set<std::string> left = names_in(dir);
  int live_temps = 0;
  for (const auto& name : left) live_temps += name.rfind(".live.bin.tmp-", 0) == 0 ? 1 : 0;
  EXPECT_EQ(live_temps, 1) << "the live writer's temporary was removed";
  live.commit();
  EXPECT_EQ(read_file(dir / "live.bin"), "being written");
  want.insert("live.bin");
  EXPECT_EQ(names_in(dir), want);
  fs::remove_all(dir);
}

TEST(File, TemporaryOfAKilledProcessIsRemovedOnlyAfterItDies) {
  const fs::path dir = temp_dir("killed");
  const fs::path tmp = dir / ".model.gguf.tmp-Kill09";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // a writer in another process: holds the lock until it is killed
    const int fd = ::open(tmp.c_str(), O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0 || ::write(ready[1], "x", 1) != 1) ::_exit(1);
    for (;;) ::pause();
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_EQ(remove_stale_temporaries(dir), 0u);
  EXPECT_TRUE(fs::exists(tmp));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(remove_stale_temporaries(dir), 1u);
  EXPECT_FALSE(fs::exists(tmp));
  ::close(ready[0]);
  ::close(ready[1]);
  fs::remove_all(dir);
}

TEST(File, AtomicFileRemovesItsOwnLeftoversAndNamesTheTargetOnWriteErrors) {
  const fs::path dir = temp_dir("full");
  touch(dir / ".big.bin.tmp-Old123");
  touch(dir / ".other.bin.tmp-Old456");  // another target's: not this writer's business
  {
    AtomicFile f(dir / "big.bin");
    EXPECT_FALSE(fs::exists(dir / ".big.bin.tmp-Old123"));
    EXPECT_TRUE(fs::exists(dir / ".other.bin.tmp-Old456"));
  }
  // A full disk, as far as this process can tell: a file size limit makes write() fail (EFBIG
  // rather than ENOSPC; the path the message names is what is tested).
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    AtomicFile f(dir / "big.bin");
    f.write(std::string(1 << 20, 'x'));
    f.commit();
  } catch (const IoError& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find((dir / "big.bin").string() + ": write failed"), std::string::npos)
      << message;
  EXPECT_EQ(message.find(".tmp-"), std::string::npos) << message;
  EXPECT_EQ(names_in(dir), std::set<std::string>{".other.bin.tmp-Old456"});
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
