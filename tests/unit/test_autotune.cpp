// The autotuner: measured plans are written to the cache, read back by the next process, a
// corrupt or foreign cache is ignored and rewritten, and dispatch really uses the cached choice.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/kernels/benchmark.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::kernels {
namespace {

namespace fs = std::filesystem;

class Autotune : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("nanochat-autotune-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    file_ = dir_ / "autotune.json";
  }
  void TearDown() override { fs::remove_all(dir_); }

  nlohmann::json read_cache() const { return nlohmann::json::parse(read_file(file_)); }

  // Writes a cache for this CPU that holds one plan.
  void write_plan(const std::string& key, const nlohmann::json& plan) const {
    const nlohmann::json doc = {{"format", "nanochat-autotune"},
                                {"version", 4},
                                {"cpu", cpu_info().signature()},
                                {"plans", {{key, plan}}}};
    write_file_atomic(file_, doc.dump());
  }

  // A 40x300 matrix packed by a context that reads the cache.
  PackedMatrix pack_through_cache() const {
    KernelOptions o;
    o.threads = 1;
    o.tune = TuneMode::kOn;
    o.tune_cache = file_;
    KernelContext ctx(o);
    return ctx.pack(40, 300, [](std::int64_t, std::span<std::int8_t> t) {
      for (auto& v : t) v = 1;
    });
  }

  fs::path dir_;
  fs::path file_;
};

TEST_F(Autotune, MeasuresWritesAndReadsBack) {
  ThreadPool pool(2);
  Plan decode, prefill;
  {
    Autotuner tuner(TuneMode::kOn, file_);
    decode = tuner.plan({96, 512, 1, std::nullopt, 0, std::nullopt}, pool);
    prefill = tuner.plan({96, 512, 16, std::nullopt, 0, std::nullopt}, pool);
    EXPECT_EQ(decode.source, "measured");
    EXPECT_GT(decode.ns_per_call, 0);
    EXPECT_EQ(decode.token_block, 1);
    EXPECT_TRUE(isa_supported(decode.isa, cpu_info().features));
    // One token: timed as decoding runs it, the weights coming from memory; batches in cache.
    EXPECT_TRUE(decode.weights_streamed);
    EXPECT_FALSE(prefill.weights_streamed);
  }
  ASSERT_TRUE(fs::exists(file_));
  const auto doc = read_cache();
  EXPECT_EQ(doc["format"], "nanochat-autotune");
  EXPECT_EQ(doc["cpu"], cpu_info().signature());
  ASSERT_TRUE(doc["plans"].contains("96x512/b1/t2/any/rany/any"));
  ASSERT_TRUE(doc["plans"].contains("96x512/b8/t2/any/rany/any"));  // batch 16 -> class 8
  EXPECT_EQ(doc["plans"]["96x512/b1/t2/any/rany/any"]["isa"], isa_name(decode.isa));
  EXPECT_EQ(doc["plans"]["96x512/b1/t2/any/rany/any"]["weights"], "memory");
  EXPECT_EQ(doc["plans"]["96x512/b8/t2/any/rany/any"]["weights"], "cache");

  Autotuner again(TuneMode::kOn, file_);
  EXPECT_EQ(again.known_plans(), 2u);
  const Plan cached = again.plan({96, 512, 1, std::nullopt, 0, std::nullopt}, pool);
  EXPECT_EQ(cached.source, "cache");
  EXPECT_EQ(cached.isa, decode.isa);
  EXPECT_EQ(cached.tile_rows, decode.tile_rows);
  EXPECT_TRUE(cached.weights_streamed);
  const Plan cached_prefill =
      again.plan({96, 512, 12, std::nullopt, 0, std::nullopt}, pool);  // same class
  EXPECT_EQ(cached_prefill.source, "cache");
  EXPECT_EQ(cached_prefill.token_block, prefill.token_block);
}

TEST_F(Autotune, CorruptCacheIsIgnoredAndRewritten) {
  for (const std::string& garbage :
       {std::string("{not json"), std::string("\x00\x01\x02", 3),
        std::string(
            R"({"format":"nanochat-autotune","version":4,"cpu":"someone-else","plans":{}})"),
        std::string(R"({"format":"nanochat-autotune","version":99,"plans":{}})"),
        // An older version's plans (here a tiling that no longer exists) are not trusted.
        std::string(R"({"format":"nanochat-autotune","version":1,"cpu":")") +
            cpu_info().signature() +
            R"(","plans":{"32x256/b1/t1/any/rany/any":{"isa":"scalar","tile_rows":1,)"
            R"("token_block":1,"ns_per_call":1.0}}})",
        // Version 2 timed one-token plans with the weights in the cache.
        std::string(R"({"format":"nanochat-autotune","version":2,"cpu":")") +
            cpu_info().signature() +
            R"(","plans":{"32x256/b1/t1/any/rany/any":{"isa":"scalar","tile_rows":1,)"
            R"("token_block":1,"ns_per_call":1.0}}})",
        // Version 3 had no layouts.
        std::string(R"({"format":"nanochat-autotune","version":3,"cpu":")") +
            cpu_info().signature() +
            R"(","plans":{"32x256/b1/t1/any/rany":{"isa":"scalar","tile_rows":1,)"
            R"("token_block":1,"ns_per_call":1.0}}})"}) {
    { std::ofstream(file_, std::ios::binary) << garbage; }
    ThreadPool pool(1);
    Autotuner tuner(TuneMode::kOn, file_);
    EXPECT_EQ(tuner.known_plans(), 0u);
    const Plan p = tuner.plan({32, 256, 1, std::nullopt, 0, std::nullopt}, pool);
    EXPECT_EQ(p.source, "measured");
    const auto doc = read_cache();  // valid again
    EXPECT_EQ(doc["version"], 4);
    EXPECT_TRUE(doc["plans"].contains("32x256/b1/t1/any/rany/any"));
  }
}

TEST_F(Autotune, EntryWithImpossibleTilingDiscardsTheFile) {
  write_plan("32x256/b1/t1/any/rany/any", {{"isa", "scalar"},
                                           {"layout", "tq2"},
                                           {"tile_rows", 3},
                                           {"token_block", 1},
                                           {"ns_per_call", 1.0}});
  Autotuner tuner(TuneMode::kOn, file_);
  EXPECT_EQ(tuner.known_plans(), 0u);
}

TEST_F(Autotune, EntryWithAVariantTheKernelLacksDiscardsTheFile) {
  write_plan("32x256/b1/t1/any/rany/any", {{"isa", "scalar"},
                                           {"layout", "tq2"},
                                           {"tile_rows", 1},
                                           {"token_block", 1},
                                           {"variant", 3},
                                           {"ns_per_call", 1.0}});
  Autotuner tuner(TuneMode::kOn, file_);
  EXPECT_EQ(tuner.known_plans(), 0u);
}

TEST_F(Autotune, CachedVariantReachesThePackedMatrix) {
  // The AVX-512 kernel's GFNI unpacking, where this CPU has it: the context must pack the
  // matrix with the cached plan's variant, which the kernel then runs.
  const KernelInfo& k = kernel_info(Isa::kAvx512);
  if (!isa_supported(Isa::kAvx512, cpu_info().features) || k.variants() < 2) {
    GTEST_SKIP() << "this CPU cannot run the AVX-512 kernel's second variant (GFNI)";
  }
  write_plan("40x300/b1/t1/any/rany/any", {{"isa", "avx512"},
                                           {"layout", "stride64"},
                                           {"tile_rows", 2},
                                           {"token_block", 1},
                                           {"variant", 1},
                                           {"ns_per_call", 5.0}});
  const PackedMatrix m = pack_through_cache();
  EXPECT_EQ(m.isa, Isa::kAvx512);
  EXPECT_EQ(m.tile_rows, 2);
  EXPECT_EQ(m.variant, 1);
}

TEST_F(Autotune, EntryWithALayoutTheKernelLacksDiscardsTheFile) {
  write_plan("32x256/b1/t1/any/rany/any", {{"isa", "scalar"},
                                           {"layout", "base3"},
                                           {"tile_rows", 1},
                                           {"token_block", 1},
                                           {"ns_per_call", 1.0}});
  Autotuner tuner(TuneMode::kOn, file_);
  EXPECT_EQ(tuner.known_plans(), 0u);
}

TEST_F(Autotune, CachedBase3LayoutReachesThePackedMatrixAndBatchesKeepIt) {
  if (!avx512_uses_vbmi()) GTEST_SKIP() << "no AVX-512 VBMI here (or NANOCHAT_NO_VBMI is set)";
  write_plan("40x300/b1/t1/any/rany/any", {{"isa", "avx512"},
                                           {"layout", "base3"},
                                           {"tile_rows", 4},
                                           {"token_block", 1},
                                           {"ns_per_call", 5.0}});
  KernelOptions o;
  o.threads = 1;
  o.tune = TuneMode::kOn;
  o.tune_cache = file_;
  KernelContext ctx(o);
  const PackedMatrix m = ctx.pack(40, 300, [](std::int64_t r, std::span<std::int8_t> t) {
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::int8_t>((r + i) % 3) - 1;
  });
  EXPECT_EQ(m.layout, Layout::kBase3);
  EXPECT_EQ(m.tile_rows, 4);
  // A batch through this matrix is planned for its layout (the key names it), and is exact.
  std::vector<std::int8_t> x(5 * 300);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::int8_t>(i * 7 % 255 - 127);
  PackedActivations acts;
  pack_activations_i8(x.data(), 5, 300, acts);
  std::vector<std::int32_t> y(5 * 40);
  ctx.gemm_i32(m, acts, y.data(), 40);
  for (int b = 0; b < 5; ++b) {
    for (int r = 0; r < 40; ++r) {
      std::int32_t want = 0;
      for (int i = 0; i < 300; ++i) {
        want +=
            ((r + i) % 3 - 1) * x[static_cast<std::size_t>(b) * 300 + static_cast<std::size_t>(i)];
      }
      ASSERT_EQ(y[static_cast<std::size_t>(b * 40 + r)], want) << b << " " << r;
    }
  }
  EXPECT_TRUE(read_cache()["plans"].contains("40x300/b4/t1/avx512/r4/base3"));
}

TEST_F(Autotune, ALayoutConstraintIsHonoured) {
  ThreadPool pool(1);
  Autotuner tuner(TuneMode::kOn, file_);
  for (Isa isa : available_isas()) {
    for (Layout layout : kernel_layouts(isa)) {
      const Plan p = tuner.plan({64, 700, 1, isa, 0, layout}, pool);
      EXPECT_EQ(p.isa, isa);
      EXPECT_EQ(p.layout, layout);
      EXPECT_EQ(tuner.plan({64, 700, 8, isa, 0, layout}, pool).layout, layout);
    }
  }
}

TEST_F(Autotune, DispatchUsesTheCachedPlan) {
  // A cache that (unusually) prefers the scalar kernel with 1-row tiles for this shape: the
  // context must pack for exactly that kernel, proving the tuner's answer drives dispatch.
  write_plan("40x300/b1/t1/any/rany/any", {{"isa", "scalar"},
                                           {"layout", "tq2"},
                                           {"tile_rows", 1},
                                           {"token_block", 1},
                                           {"ns_per_call", 5.0}});
  const PackedMatrix m = pack_through_cache();
  EXPECT_EQ(m.isa, Isa::kScalar);
  EXPECT_EQ(m.tile_rows, 1);
}

TEST_F(Autotune, OffModeNeverMeasuresNorWrites) {
  ThreadPool pool(1);
  Autotuner tuner(TuneMode::kOff, file_);
  const Plan p = tuner.plan({64, 256, 32, std::nullopt, 0, std::nullopt}, pool);
  EXPECT_EQ(p.source, "default");
  EXPECT_EQ(p.isa, available_isas().front());
  EXPECT_FALSE(fs::exists(file_));
}

TEST_F(Autotune, ForceModeMeasuresAgain) {
  ThreadPool pool(1);
  { Autotuner(TuneMode::kOn, file_).plan({32, 256, 1, std::nullopt, 0, std::nullopt}, pool); }
  Autotuner forced(TuneMode::kForce, file_);
  EXPECT_EQ(forced.plan({32, 256, 1, std::nullopt, 0, std::nullopt}, pool).source, "measured");
  EXPECT_EQ(forced.plan({32, 256, 1, std::nullopt, 0, std::nullopt}, pool).source,
            "measured");  // once per run
}

TEST_F(Autotune, ConstraintsAreHonoured) {
  ThreadPool pool(1);
  Autotuner tuner(TuneMode::kOn, file_);
  const Plan p = tuner.plan({32, 256, 4, Isa::kScalar, 1, std::nullopt}, pool);
  EXPECT_EQ(p.isa, Isa::kScalar);
  EXPECT_EQ(p.tile_rows, 1);
  for (Isa isa : available_isas()) {
    const Plan q = tuner.plan({64, 512, 1, isa, 0, std::nullopt}, pool);
    EXPECT_EQ(q.isa, isa);
  }
}

// The kernel benchmark (library side of `nanochat benchmark kernels`): one result per case, in
// order, each announced by an event; ratios against scalar and against one token.
TEST(KernelBenchmark, TimesEveryCaseAndRelatesThem) {
  KernelBenchConfig config;
  config.shapes = {{64, 256}, {32, 128}};
  config.threads = {2, 1, 2};  // sorted, deduplicated
  config.batches = {1, 3};
  config.isas = {Isa::kScalar, available_isas().front()};
  config.reps = 2;
  config.bandwidth = false;
  config.autotune = TuneMode::kOff;
  // Each ISA runs in every layout it has here (the AVX-512 kernel: base3 too, with VBMI).
  std::size_t kernels_run = 0;
  for (Isa isa : config.isas) kernels_run += kernel_layouts(isa).size();
  const std::size_t cases = 2u * 2u * 2u * kernels_run;
  std::vector<KernelBenchEvent::Kind> kinds;
  std::size_t done = 0, last_index = 0;
  const KernelBenchReport report = run_kernel_benchmark(config, [&](const KernelBenchEvent& e) {
    kinds.push_back(e.kind);
    EXPECT_EQ(e.total, cases);
    EXPECT_GE(e.index, last_index);
    last_index = e.index;
    if (e.kind == KernelBenchEvent::Kind::kDone) {
      ASSERT_NE(e.result, nullptr);
      EXPECT_EQ(e.result->shape.rows, e.shape.rows);
      ++done;
    }
  });
  ASSERT_EQ(report.results.size(), cases);
  EXPECT_EQ(done, cases);
  EXPECT_TRUE(report.bandwidth.empty());
  EXPECT_EQ(report.results.front().threads, 1);
  EXPECT_EQ(report.results.front().isa, Isa::kScalar);
  for (const KernelBenchResult& r : report.results) {
    EXPECT_GT(r.seconds.median, 0);
    EXPECT_EQ(r.seconds.n, 2u);
    const auto macs = static_cast<double>(r.shape.rows * r.shape.cols * r.batch);
    EXPECT_NEAR(r.gops, 2.0 * macs / r.seconds.median / 1e9, 1e-9 * r.gops);
    EXPECT_GT(r.vs_scalar, 0);  // scalar ran, so every case has its ratio (scalar's own is 1)
    if (r.isa == Isa::kScalar) {
      EXPECT_DOUBLE_EQ(r.vs_scalar, 1.0);
    }
    EXPECT_EQ(r.token_cost > 0, r.batch > 1);
    EXPECT_EQ(r.plan.source, "default");
  }
}

TEST(KernelBenchmark, BadConfigNamesItsParameter) {
  KernelBenchConfig config;
  config.shapes = {{64, 256}};
  config.threads = {1};
  config.batches = {1};
  config.isas = {Isa::kScalar};
  config.bandwidth = false;
  config.autotune = TuneMode::kOff;
  auto message = [&](const KernelBenchConfig& c) -> std::string {
    try {
      run_kernel_benchmark(c, nullptr);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "no error";
  };
  KernelBenchConfig c = config;
  c.reps = 0;
  EXPECT_EQ(message(c), "reps 0: use 1 to 1000");
  c = config;
  c.shapes = {{0, 5}};
  EXPECT_EQ(message(c), "shape 0x5: rows and columns must be > 0");
  c = config;
  c.threads = {0};
  EXPECT_EQ(message(c), "threads 0: must be at least 1");
  c = config;
  c.batches.clear();
  EXPECT_EQ(message(c), "batch: no batch size given");
}

TEST(AutotuneModes, Parse) {
  EXPECT_EQ(parse_tune_mode("on"), TuneMode::kOn);
  EXPECT_EQ(parse_tune_mode("off"), TuneMode::kOff);
  EXPECT_EQ(parse_tune_mode("force"), TuneMode::kForce);
  EXPECT_THROW(parse_tune_mode("maybe"), UsageError);
  EXPECT_EQ(batch_class(1), 1);
  EXPECT_EQ(batch_class(3), 2);
  EXPECT_EQ(batch_class(5), 4);
  EXPECT_EQ(batch_class(16), 8);
  EXPECT_EQ(batch_class(31), 8);
  EXPECT_EQ(batch_class(32), 32);
  EXPECT_EQ(batch_class(2048), 32);
}

}  // namespace
}  // namespace nanochat::kernels
