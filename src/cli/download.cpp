// nanochat download and nanochat models: fetch models by registry name or address into the
// cache, and list, show, locate or remove them.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "nanochat/cli/commands.hpp"
#include "nanochat/cli/common.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/stats.hpp"
#include "nanochat/zoo/store.hpp"

namespace nanochat::cli {
namespace {
namespace fs = std::filesystem;

struct DownloadFlags {
  std::vector<std::string> specs;
  std::string revision = "main";
  std::string sha256;
  std::string output;
  bool force = false;
  int retries = 5;
};

std::string human_bytes(std::uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} kB", b / 1e3);
  return fmt::format("{} B", bytes);
}

void download_one(const std::string& spec, const DownloadFlags& f, const zoo::Registry& registry,
                  zoo::ModelCache& cache) {
  zoo::PullOptions o;
  o.revision = f.revision;
  o.sha256 = f.sha256;
  o.output = f.output;
  o.force = f.force;
  o.download = download_reporting(spec);
  o.download.retries = f.retries;
  o.on_wait = [](const std::string& name) {
    fmt::print(stderr, "nanochat: {}: another nanochat process is downloading it; waiting\n", name);
  };
  const double start = now_seconds();
  zoo::PullResult r;
  try {
    r = zoo::pull(spec, registry, cache, o);
  } catch (const zoo::DownloadCancelled& e) {
    fmt::print(stderr, "{}nanochat: {}\n", ::isatty(STDERR_FILENO) != 0 ? "\r\033[K" : "",
               e.what());
    throw Interrupted{};
  }
  const double seconds = now_seconds() - start;
  if (r.downloaded) {
    const double rate =
        r.receive_seconds > 0 ? static_cast<double>(r.transferred) / r.receive_seconds : 0.0;
    fmt::print(stderr, "nanochat: {}: {} in {:.1f} s ({}/s){}, sha256 {}\n", r.name,
               human_bytes(r.size), seconds, human_bytes(static_cast<std::uint64_t>(rate)),
               r.transferred < r.size
                   ? fmt::format("; resumed: {} came now", human_bytes(r.transferred))
                   : std::string(),
               r.sha256);
  } else {
    fmt::print(stderr, "nanochat: {}: {} ({}); --force downloads it again\n", r.name,
               r.sha256.empty() && !r.path.empty() ? "a local file" : "already downloaded",
               human_bytes(r.size));
  }
  fmt::print("{}\n", r.path.string());  // stdout: the file, for scripts
}

void run_download(const DownloadFlags& f) {
  if (f.specs.size() > 1 && !f.output.empty()) {
    fail<UsageError>("-o {}: names one file; download several models into the cache instead",
                     f.output);
  }
  if (f.specs.size() > 1 && !f.sha256.empty()) {
    fail<UsageError>("--sha256: checks one model; give one model with it");
  }
  const zoo::Registry registry = zoo::Registry::load();
  zoo::ModelCache cache = zoo::ModelCache::open_default();
  catch_interrupts();
  for (const auto& spec : f.specs) download_one(spec, f, registry, cache);
}

struct ModelsFlags {
  std::string name;
  bool json = false;
};

std::string status_of(const zoo::RegistryEntry& e, const zoo::ModelCache& cache) {
  std::error_code ec;
  if (e.urls.empty()) return fs::is_regular_file(e.file, ec) ? "local" : "missing";
  return cache.find(e.name) ? "downloaded" : "not downloaded";
}

nlohmann::json entry_json(const zoo::RegistryEntry& e, const zoo::ModelCache& cache) {
  nlohmann::json j = {{"name", e.name},
                      {"description", e.description},
                      {"urls", e.urls},
                      {"sha256", e.sha256},
                      {"size", e.size},
                      {"license", e.license},
                      {"architecture", e.architecture},
                      {"use", e.use},
                      {"note", e.note},
                      {"pull", e.pull},
                      {"registry", e.origin.string()},
                      {"status", status_of(e, cache)}};
  if (!e.file.empty()) j["file"] = e.file.string();
  if (const auto c = cache.find(e.name)) {
    j["path"] = c->path.string();
    j["sha256"] = c->sha256;
    j["size"] = c->size;
  }
  return j;
}

void run_list(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  const zoo::ModelCache cache = zoo::ModelCache::open_default();
  const auto cached = cache.list();
  if (f.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : registry.entries()) out.push_back(entry_json(e, cache));
    for (const auto& c : cached) {
      if (registry.find(c.name) != nullptr) continue;
      out.push_back({{"name", c.name},
                     {"status", "downloaded"},
                     {"path", c.path.string()},
                     {"sha256", c.sha256},
                     {"size", c.size},
                     {"source", c.source}});
    }
    for (const auto& p : cache.partials()) {
      out.push_back({{"name", p.name},
                     {"status", "partial"},
                     {"bytes", p.bytes},
                     {"total", p.total},
                     {"source", p.url}});
    }
    fmt::print("{}\n", out.dump(2));
    return;
  }
  // SHA256: the first 12 digits of the file's (or the registry's) digest; `show` has them all.
  fmt::print("{:<24} {:>9}  {:<15} {:<12}  {}\n", "NAME", "SIZE", "STATUS", "SHA256",
             "DESCRIPTION");
  for (const auto& e : registry.entries()) {
    std::uint64_t size = e.size;
    std::string sha = e.sha256;
    std::error_code ec;
    if (!e.file.empty() && fs::is_regular_file(e.file, ec)) size = fs::file_size(e.file, ec);
    if (const auto c = cache.find(e.name)) {
      size = c->size;
      sha = c->sha256;
    }
    fmt::print("{:<24} {:>9}  {:<15} {:<12}  {}{}\n", e.name, size ? human_bytes(size) : "?",
               status_of(e, cache), sha.empty() ? "?" : sha.substr(0, 12), e.description,
               e.note.empty() ? "" : " [" + e.note + "]");
  }
  for (const auto& c : cached) {
    if (registry.find(c.name) != nullptr) continue;
    fmt::print("{:<24} {:>9}  {:<15} {:<12}  {}\n", c.name, human_bytes(c.size), "downloaded",
               c.sha256.substr(0, 12), "(not in the registry)");
  }
  for (const auto& p : cache.partials()) {
    fmt::print(
        "{:<24} {:>9}  {:<15} {:<12}  {}\n", p.name, human_bytes(p.bytes),
        p.total != 0 ? fmt::format("partial {}%", p.bytes * 100 / p.total) : std::string("partial"),
        "", "unfinished download: 'nanochat download' resumes it, 'models rm' drops it");
  }
  std::string files;
  for (const auto& file : registry.files()) files += (files.empty() ? "" : ", ") + file.string();
  fmt::print("\nregistry: {}\ncache:    {}\n", files.empty() ? "none found" : files,
             cache.root().string());
}

void run_show(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  const zoo::ModelCache cache = zoo::ModelCache::open_default();
  const zoo::RegistryEntry* e = registry.find(f.name);
  const auto cached = cache.find(e != nullptr ? e->name : f.name);
  if (e == nullptr && !cached) {
    fail<UsageError>(
        "models show {}: no model of that name in the registry or the cache{} (see "
        "'nanochat models list')",
        f.name, registry.suggest(f.name));
  }
  nlohmann::json j;
  if (e != nullptr) {
    j = entry_json(*e, cache);
  } else {
    j = {{"name", cached->name}, {"status", "downloaded"}};
  }
  if (cached) {
    j["path"] = cached->path.string();
    j["sha256"] = cached->sha256;
    j["size"] = cached->size;
    j["source"] = cached->source;
    j["downloaded"] = cached->added;
  }
  if (f.json) {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  for (const auto& [key, value] : j.items()) {
    if (value.is_string() && value.get<std::string>().empty()) continue;
    if (value.is_array() && value.empty()) continue;
    if (value.is_number() && value.get<double>() == 0) continue;
    fmt::print("{:<13} {}\n", key + ":",
               value.is_string() ? value.get<std::string>() : value.dump());
  }
}

void run_path(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  const zoo::ModelCache cache = zoo::ModelCache::open_default();
  const zoo::RegistryEntry* e = registry.find(f.name);
  if (e != nullptr && e->urls.empty()) {
    fmt::print("{}\n", e->file.string());
    return;
  }
  if (const auto c = cache.find(f.name)) {
    fmt::print("{}\n", c->path.string());
    return;
  }
  if (e == nullptr) {
    fail<UsageError>("models path {}: no model of that name in the registry or the cache{}", f.name,
                     registry.suggest(f.name));
  }
  fail<Error>("models path {}: not downloaded yet; run 'nanochat download {}'", f.name, f.name);
}

void run_rm(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  zoo::ModelCache cache = zoo::ModelCache::open_default();
  const zoo::RegistryEntry* e = registry.find(f.name);
  if (e != nullptr && e->urls.empty()) {
    fail<UsageError>(
        "models rm {}: a local file ({}) that nanochat ships, not a download; "
        "nothing to remove",
        f.name, e->file.string());
  }
  const auto removed = cache.remove(f.name);
  if (!removed.found && removed.partial_bytes != 0) {
    fmt::print(stderr, "nanochat: removed the unfinished download of {} ({})\n", f.name,
               human_bytes(removed.partial_bytes));
    return;
  }
  if (!removed.found) {
    fail<Error>("models rm {}: not in the cache {} (see 'nanochat models list')", f.name,
                cache.root().string());
  }
  fmt::print(stderr, "nanochat: removed {}{}\n", f.name,
             removed.bytes_freed != 0
                 ? fmt::format(" ({} freed)", human_bytes(removed.bytes_freed))
                 : std::string(" (its file stays: another name refers to it)"));
}

}  // namespace

void add_download(CLI::App& app) {
  auto f = std::make_shared<DownloadFlags>();
  CLI::App* sub = app.add_subcommand(
      "download",
      "Download a model by registry name, https:// URL or hf://OWNER/REPO/FILE.gguf into the "
      "cache (resumable, verified by SHA-256 and as GGUF before it is used); prints its path");
  sub->add_option("models", f->specs,
                  "Registry names ('nanochat models list'), http(s):// URLs, or "
                  "hf://OWNER/REPO/FILE.gguf addresses (endpoint: $NANOCHAT_HF_ENDPOINT, token: "
                  "$HF_TOKEN); several are fetched one after another")
      ->required();
  sub->add_option("--revision", f->revision, "Branch, tag or commit of an hf:// address")
      ->capture_default_str();
  sub->add_option("--sha256", f->sha256,
                  "Expected SHA-256 (64 hex digits); a file that does not match is deleted");
  sub->add_option("-o,--output", f->output,
                  "Write the file here instead of the cache (not registered for -m NAME)");
  sub->add_flag("--force", f->force, "Download again even when the cache has it");
  sub->add_option("--retries", f->retries,
                  "Transient failures (connection lost, HTTP 5xx/429) tolerated in a row, 0-100 "
                  "(default 5)")
      ->check(CLI::Range(0, 100));
  sub->callback([f] { run_download(*f); });
}

void add_models(CLI::App& app) {
  auto f = std::make_shared<ModelsFlags>();
  CLI::App* sub = app.add_subcommand(
      "models", "The model registry and cache: list, show NAME, path NAME, rm NAME");
  sub->add_flag("--json", f->json, "Print JSON on stdout");
  sub->require_subcommand(0, 1);
  CLI::App* list = sub->add_subcommand("list", "Registry entries and downloaded models (default)");
  list->add_flag("--json", f->json, "Print JSON on stdout");
  list->callback([f] { run_list(*f); });
  CLI::App* show = sub->add_subcommand("show", "Everything about one model");
  show->add_option("name", f->name, "Registry name or downloaded address")->required();
  show->add_flag("--json", f->json, "Print JSON on stdout");
  show->callback([f] { run_show(*f); });
  CLI::App* path = sub->add_subcommand("path", "Print the file of a downloaded or local model");
  path->add_option("name", f->name, "Registry name or downloaded address")->required();
  path->callback([f] { run_path(*f); });
  CLI::App* rm = sub->add_subcommand(
      "rm", "Remove a downloaded model from the cache (its file only when no other name uses it)");
  rm->add_option("name", f->name, "Registry name or downloaded address")->required();
  rm->callback([f] { run_rm(*f); });
  sub->callback([f, sub] {
    if (sub->get_subcommands().empty()) run_list(*f);
  });
}

}  // namespace nanochat::cli
