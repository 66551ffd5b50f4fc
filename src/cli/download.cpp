// nanochat download and nanochat models: fetch models by registry name or address into the
// cache, and list, show, locate or remove them.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
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

nlohmann::json listing_json(const zoo::ModelListing& m) {
  nlohmann::json j = {
      {"name", m.name}, {"status", m.status}, {"size", m.size}, {"sha256", m.sha256}};
  if (!m.path.empty()) j["path"] = m.path.string();
  if (const auto& e = m.entry) {
    j["description"] = e->description;
    j["urls"] = e->urls;
    j["license"] = e->license;
    j["architecture"] = e->architecture;
    j["use"] = e->use;
    j["note"] = e->note;
    j["pull"] = e->pull;
    j["registry"] = e->origin.string();
    if (!e->file.empty()) j["file"] = e->file.string();
  }
  if (const auto& c = m.cached) {
    j["source"] = c->source;
    j["downloaded"] = c->added;
  }
  if (const auto& p = m.partial) {
    j["bytes"] = p->bytes;
    j["total"] = p->total;
    j["source"] = p->url;
  }
  return j;
}

void run_list(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  const zoo::ModelCache cache = zoo::ModelCache::open_default();
  const auto models = zoo::list_models(registry, cache);
  if (f.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : models) out.push_back(listing_json(m));
    fmt::print("{}\n", out.dump(2));
    return;
  }
  // SHA256: the first 12 digits of the file's (or the registry's) digest; `show` has them all.
  fmt::print("{:<24} {:>9}  {:<15} {:<12}  {}\n", "NAME", "SIZE", "STATUS", "SHA256",
             "DESCRIPTION");
  for (const auto& m : models) {
    std::string status = m.status;
    std::string about = "(not in the registry)";
    std::uint64_t size = m.size;
    if (m.entry) {
      about = m.entry->description + (m.entry->note.empty() ? "" : " [" + m.entry->note + "]");
    }
    if (m.partial) {
      size = m.partial->bytes;
      if (m.partial->total != 0)
        status += fmt::format(" {}%", m.partial->bytes * 100 / m.partial->total);
      about = "unfinished download: 'nanochat download' resumes it, 'models rm' drops it";
    }
    fmt::print("{:<24} {:>9}  {:<15} {:<12}  {}\n", m.name, size != 0 ? human_bytes(size) : "?",
               status, m.sha256.empty() ? (m.partial ? "" : "?") : m.sha256.substr(0, 12), about);
  }
  std::string files;
  for (const auto& file : registry.files()) files += (files.empty() ? "" : ", ") + file.string();
  fmt::print("\nregistry: {}\ncache:    {}\n", files.empty() ? "none found" : files,
             cache.root().string());
}

void run_show(const ModelsFlags& f) {
  const zoo::Registry registry = zoo::Registry::load();
  const zoo::ModelCache cache = zoo::ModelCache::open_default();
  const auto models = zoo::list_models(registry, cache);
  const auto m = std::find_if(models.begin(), models.end(),
                              [&](const zoo::ModelListing& x) { return x.name == f.name; });
  if (m == models.end()) {
    fail<UsageError>(
        "models show {}: no model of that name in the registry or the cache{} (see "
        "'nanochat models list')",
        f.name, registry.suggest(f.name));
  }
  const nlohmann::json j = listing_json(*m);
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
