// nanochat system-info: what a bug report needs — build, CPU, topology, ISA features, the kernel
// path in use and the plan dispatch uses for each shape class.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/kernels/registry.hpp"
#include "nanochat/util/cpu.hpp"
#include "nanochat/version.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::cli {
namespace {

struct ShapeClass {
  const char* name;
  std::int64_t rows, cols, batch;
};

// The BitNet b1.58 2B projections, as decode (1 token) and prefill (64 tokens).
constexpr ShapeClass kShapeClasses[] = {
    {"decode attn 2560x2560", 2560, 2560, 1},   {"decode kv 640x2560", 640, 2560, 1},
    {"decode ffn-up 6912x2560", 6912, 2560, 1}, {"decode ffn-down 2560x6912", 2560, 6912, 1},
    {"prefill attn 2560x2560", 2560, 2560, 64}, {"prefill ffn-up 6912x2560", 6912, 2560, 64},
};

struct Options {
  KernelFlags kernel;
  bool json = false;
};

void run(const Options& o) {
  const CpuInfo& cpu = cpu_info();
  const kernels::Isa isa = kernels::default_isa(o.kernel.isa);
  std::string avail;
  for (auto a : kernels::available_isas())
    avail += std::string(avail.empty() ? "" : " ") + kernels::isa_name(a);

  int threads = 0;
  if (!o.kernel.threads.empty()) threads = parse_thread_list(o.kernel.threads)[0];
  kernels::KernelOptions options = o.kernel.options(threads);
  kernels::KernelContext ctx(options);

  nlohmann::json plans = nlohmann::json::array();
  // With --autotune on (the default) nothing is measured, so system-info stays instant: cached
  // plans are shown, else the defaults. --autotune force measures.
  const auto plan_for = [&](const kernels::PlanRequest& request) {
    if (options.tune != kernels::TuneMode::kOn) return ctx.tuner().plan(request, ctx.pool());
    auto cached = ctx.tuner().cached_plan(request, ctx.threads());
    return cached ? *cached : ctx.tuner().default_plan(request);
  };
  for (const auto& sc : kShapeClasses) {
    // A matrix is packed once, for its one-token plan; several tokens run on that packing (its
    // kernel, layout and tile rows) with the tuned tokens per pass, as the model does.
    const kernels::Plan decode =
        plan_for(kernels::PlanRequest{sc.rows, sc.cols, 1, options.isa, 0, options.layout});
    const kernels::Plan p =
        sc.batch == 1 ? decode
                      : plan_for(kernels::PlanRequest{sc.rows, sc.cols, sc.batch, decode.isa,
                                                      decode.tile_rows, decode.layout});
    plans.push_back({{"shape", sc.name},
                     {"kernel", kernels::kernel_info(p.isa).name},
                     {"layout", kernels::layout_name(p.layout)},
                     {"tile_rows", p.tile_rows},
                     {"token_block", p.token_block},
                     // base3 has one way of unpacking (the table lookup), not the 2-bit variants.
                     {"variant", p.layout == kernels::Layout::kBase3
                                     ? "table"
                                     : kernels::kernel_info(p.isa).variant_name(p.variant)},
                     {"source", p.source}});
  }

  const auto default_model = zoo::find_default_model();
  if (o.json) {
    const nlohmann::json doc = {
        {"version", build::kVersion},
        {"default_model",
         default_model ? nlohmann::json(default_model->string()) : nlohmann::json(nullptr)},
        {"commit", build::kGitCommit},
        {"compiler", build::kCompiler},
        {"build_type", build::kBuildType},
        {"cpu",
         {{"vendor", cpu.vendor},
          {"model", cpu.brand},
          {"family", cpu.family},
          {"model_id", cpu.model},
          {"stepping", cpu.stepping},
          {"signature", cpu.signature()},
          {"logical_cpus", cpu.logical_cpus},
          {"physical_cores", cpu.physical_cores},
          {"numa_nodes", cpu.numa_nodes},
          {"l1d_bytes", cpu.l1d_bytes},
          {"l2_bytes", cpu.l2_bytes},
          {"l3_bytes", cpu.l3_bytes},
          {"features", cpu.feature_list()}}},
        {"isa_available", avail},
        {"isa_in_use", kernels::isa_name(isa)},
        {"avx512_gfni", kernels::avx512_uses_gfni()},
        {"avx2_avx_vnni", kernels::avx2_uses_avx_vnni()},
        {"avx512_vbmi_base3", kernels::avx512_uses_vbmi()},
        {"threads", ctx.threads()},
        {"autotune",
         {{"mode", kernels::tune_mode_name(options.tune)},
          {"cache", ctx.tuner().cache_file().string()},
          {"plans_cached", ctx.tuner().known_plans()}}},
        {"plans", plans}};
    std::puts(doc.dump(2).c_str());
    return;
  }
  fmt::print("nanochat {} (commit {}, {}, {} build)\n", build::kVersion, build::kGitCommit,
             build::kCompiler, build::kBuildType);
  fmt::print("default model:  {}\n",
             default_model ? default_model->string()
                           : fmt::format("{} not found (pass -m)", zoo::kDefaultModelFile));
  fmt::print("cpu:            {} ({} family {} model {} stepping {})\n",
             cpu.brand.empty() ? "unknown" : cpu.brand, cpu.vendor, cpu.family, cpu.model,
             cpu.stepping);
  fmt::print("cores:          {} physical, {} logical, {} NUMA node{}\n", cpu.physical_cores,
             cpu.logical_cpus, cpu.numa_nodes, cpu.numa_nodes == 1 ? "" : "s");
  const auto size = [](std::size_t bytes, int shift, const char* unit) {
    return bytes == 0 ? std::string("unknown") : fmt::format("{} {}", bytes >> shift, unit);
  };
  fmt::print("caches:         L1d {}, L2 {}, L3 {}\n", size(cpu.l1d_bytes, 10, "KiB"),
             size(cpu.l2_bytes, 10, "KiB"), size(cpu.l3_bytes, 20, "MiB"));
  fmt::print("isa features:   {}\n", cpu.feature_list());
  fmt::print("kernel paths:   {} (in use: {})\n", avail, kernels::isa_name(isa));
  fmt::print("extensions:     avx512 unpacks with {}, avx2 multiplies with {}\n",
             kernels::avx512_uses_gfni() ? "shift and mask or GFNI (per plan)"
                                         : "shift and mask (no GFNI or NANOCHAT_NO_GFNI)",
             kernels::avx2_uses_avx_vnni() ? "AVX-VNNI"
                                           : "vpmaddubsw (no AVX-VNNI or NANOCHAT_NO_AVX_VNNI)");
  fmt::print("layouts:        {}\n",
             kernels::avx512_uses_vbmi()
                 ? "2-bit, or 1.6-bit base3 with VBMI (per plan)"
                 : "2-bit (base3 needs AVX-512 with VBMI; or NANOCHAT_NO_VBMI is set)");
  fmt::print("threads:        {}\n", ctx.threads());
  fmt::print("autotune:       {}, cache {} ({} plans)\n", kernels::tune_mode_name(options.tune),
             ctx.tuner().cache_file().string(), ctx.tuner().known_plans());
  fmt::print("plans:\n");
  for (const auto& p : plans) {
    fmt::print("  {:<28} {:<12} {:<8} tile {} rows x {} tokens, unpack {} ({})\n",
               p["shape"].get<std::string>(), p["kernel"].get<std::string>(),
               p["layout"].get<std::string>(), p["tile_rows"].get<int>(),
               p["token_block"].get<int>(), p["variant"].get<std::string>(),
               p["source"].get<std::string>());
  }
}

}  // namespace

void add_system_info(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand(
      "system-info", "Print CPU, ISA features and the kernels dispatch picks (for bug reports)");
  opts->kernel.add_to(*sub, false);
  sub->add_flag("--json", opts->json, "Print one JSON object on stdout");
  sub->callback([opts] { run(*opts); });
}

}  // namespace nanochat::cli
