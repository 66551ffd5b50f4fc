#include "nanochat/zoo/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nanochat/gguf/reader.hpp"
#include "nanochat/util/file.hpp"
#include "nanochat/util/sha256.hpp"
#include "nanochat/zoo/default_model.hpp"

namespace nanochat::zoo {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// An exclusive advisory lock (flock) on a file, held for the object's life.
class FileLock {
 public:
  FileLock(const fs::path& path, const std::function<void(const std::string&)>& on_wait,
           const std::string& what) {
    make_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      fail<IoError>("{}: cannot open the lock file: {}", path.string(), std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
    if (errno != EWOULDBLOCK) {
      const int e = errno;
      ::close(fd_);
      fail<IoError>("{}: cannot lock it: {}", path.string(), std::strerror(e));
    }
    if (on_wait) on_wait(what);
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd_);
      fail<IoError>("{}: cannot lock it: {}", path.string(), std::strerror(e));
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string key_of(std::string_view name) {
  Sha256 h;
  h.update(name);
  return h.finish().substr(0, 24);
}

json read_index(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return json{{"version", 1}, {"models", json::object()}};
  try {
    json j = json::parse(read_file(file));
    if (!j.is_object() || !j.contains("models") || !j["models"].is_object()) {
      fail<FormatError>("not a model index");
    }
    return j;
  } catch (const std::exception& e) {
    fail<FormatError>(
        "{}: the cache's index is damaged ({}); remove it (the downloaded files "
        "in blobs/ stay) and download again",
        file.string(), e.what());
  }
}

CachedModel entry_from(const std::string& name, const json& v, const ModelCache& cache) {
  CachedModel m;
  m.name = name;
  m.sha256 = v.value("sha256", "");
  m.size = v.value("size", std::uint64_t{0});
  m.source = v.value("source", "");
  m.added = v.value("added", "");
  m.path = cache.blob_path(m.sha256);
  return m;
}

bool is_url(std::string_view s) { return s.starts_with("http://") || s.starts_with("https://"); }

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Checks a finished download and returns its SHA-256, or throws (removing the partial file).
// The first bytes of a file, printable, for saying what came instead of a model.
std::string first_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::string head(24, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  std::string out;
  for (const char c : head) {
    out += (c >= 32 && c < 127) ? std::string(1, c)
                                : fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
  }
  return out;
}

void verify(const DownloadResult& got, const std::string& expected,
            const std::string& expected_from, const fs::path& partial, const std::string& display) {
  if (!expected.empty() && got.sha256 != expected) {
    remove_partial(partial);
    fail<DownloadError>(
        "{}: SHA-256 mismatch: expected {} ({}), got {}; the download was deleted "
        "and nothing was kept",
        display, expected, expected_from, got.sha256);
  }
  if (const std::string head = first_bytes(partial); !head.starts_with("GGUF")) {
    remove_partial(partial);
    fail<DownloadError>(
        "{}: the server sent something that is not a GGUF model ({}, starting "
        "\"{}\"); nothing was kept: check the address",
        display,
        got.content_type.empty() ? std::string("no Content-Type")
                                 : "Content-Type " + got.content_type,
        head);
  }
  try {
    gguf::ReadOptions read;
    read.allow_unsupported_types = true;
    (void)gguf::GgufFile::open(partial, read);
  } catch (const Error& e) {
    remove_partial(partial);
    fail<DownloadError>("{}: the downloaded file is not a valid GGUF model ({}); nothing was kept",
                        display, e.what());
  }
}

}  // namespace

ModelCache::ModelCache(fs::path root) : root_(std::move(root)) {}

ModelCache ModelCache::open_default() { return ModelCache(cache_dir() / "models"); }

fs::path ModelCache::blob_path(std::string_view sha256) const {
  return root_ / "blobs" / fmt::format("sha256-{}", sha256);
}
fs::path ModelCache::partial_path(std::string_view name) const {
  return root_ / "partial" / (key_of(name) + ".part");
}
fs::path ModelCache::lock_path(std::string_view name) const {
  return root_ / "locks" / (key_of(name) + ".lock");
}

std::optional<CachedModel> ModelCache::find(std::string_view name) const {
  const json index = read_index(root_ / "index.json");
  const auto& models = index["models"];
  const auto it = models.find(std::string(name));
  if (it == models.end()) return std::nullopt;
  CachedModel m = entry_from(std::string(name), *it, *this);
  std::error_code ec;
  if (!is_sha256_hex(m.sha256) || !fs::is_regular_file(m.path, ec)) return std::nullopt;
  return m;
}

std::vector<CachedModel> ModelCache::list() const {
  const json index = read_index(root_ / "index.json");
  std::vector<CachedModel> out;
  for (const auto& [name, v] : index["models"].items()) {
    CachedModel m = entry_from(name, v, *this);
    std::error_code ec;
    if (is_sha256_hex(m.sha256) && fs::is_regular_file(m.path, ec)) out.push_back(std::move(m));
  }
  return out;
}

CachedModel ModelCache::add(const std::string& name, const std::string& source,
                            const std::string& sha256, std::uint64_t size, const fs::path& file) {
  FileLock lock(root_ / "index.lock", nullptr, "");
  const fs::path blob = blob_path(sha256);
  make_directories(blob.parent_path());
  std::error_code ec;
  if (fs::is_regular_file(blob, ec)) {
    fs::remove(file, ec);  // the same bytes are already there
  } else if (::rename(file.c_str(), blob.c_str()) != 0) {
    fail<IoError>("{}: cannot move the download into the cache as {}: {}", file.string(),
                  blob.string(), std::strerror(errno));
  }
  fsync_directory(blob.parent_path());
  json index = read_index(root_ / "index.json");
  index["models"][name] = {
      {"sha256", sha256}, {"size", size}, {"source", source}, {"added", utc_now()}};
  write_file_atomic(root_ / "index.json", index.dump(2) + "\n");
  CachedModel m;
  m.name = name;
  m.sha256 = sha256;
  m.size = size;
  m.source = source;
  m.added = index["models"][name]["added"].get<std::string>();
  m.path = blob;
  return m;
}

std::optional<CachedModel> ModelCache::adopt(const std::string& name, const std::string& source,
                                             const std::string& sha256) {
  const fs::path blob = blob_path(sha256);
  std::error_code ec;
  if (!is_sha256_hex(sha256) || !fs::is_regular_file(blob, ec)) return std::nullopt;
  FileLock lock(root_ / "index.lock", nullptr, "");
  json index = read_index(root_ / "index.json");
  const auto size = static_cast<std::uint64_t>(fs::file_size(blob, ec));
  index["models"][name] = {
      {"sha256", sha256}, {"size", size}, {"source", source}, {"added", utc_now()}};
  write_file_atomic(root_ / "index.json", index.dump(2) + "\n");
  return entry_from(name, index["models"][name], *this);
}

std::vector<ModelCache::Partial> ModelCache::partials() const {
  std::vector<Partial> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "partial", ec)) {
    if (e.path().extension() != ".part") continue;
    Partial p;
    p.bytes = static_cast<std::uint64_t>(fs::file_size(e.path(), ec));
    try {
      const json j = json::parse(read_file(partial_meta_path(e.path())));
      p.name = j.value("name", "");
      p.url = j.value("url", "");
      p.total = j.value("total", std::uint64_t{0});
    } catch (const std::exception&) {
      continue;  // no resume data yet: nothing a user can act on
    }
    if (!p.name.empty()) out.push_back(std::move(p));
  }
  return out;
}

ModelCache::Removed ModelCache::remove(std::string_view name) {
  FileLock lock(root_ / "index.lock", nullptr, "");
  Removed removed;
  {
    std::error_code ec;
    const auto bytes = fs::file_size(partial_path(name), ec);
    if (!ec) removed.partial_bytes = static_cast<std::uint64_t>(bytes);
  }
  remove_partial(partial_path(name));
  json index = read_index(root_ / "index.json");
  auto& models = index["models"];
  const auto it = models.find(std::string(name));
  if (it == models.end()) return removed;
  removed.found = true;
  const std::string sha = it->value("sha256", "");
  models.erase(it);
  write_file_atomic(root_ / "index.json", index.dump(2) + "\n");
  bool shared = false;
  for (const auto& [other, v] : models.items()) shared = shared || v.value("sha256", "") == sha;
  if (!shared && is_sha256_hex(sha)) {
    std::error_code ec;
    const fs::path blob = blob_path(sha);
    const auto bytes = fs::file_size(blob, ec);
    if (!ec && fs::remove(blob, ec)) removed.bytes_freed = bytes;
  }
  return removed;
}

std::vector<ModelListing> list_models(const Registry& registry, const ModelCache& cache) {
  std::vector<ModelListing> out;
  const std::vector<CachedModel> cached = cache.list();
  const auto cached_as = [&](const std::string& name) -> std::optional<CachedModel> {
    for (const auto& c : cached) {
      if (c.name == name) return c;
    }
    return std::nullopt;
  };
  for (const RegistryEntry& e : registry.entries()) {
    ModelListing m;
    m.name = e.name;
    m.entry = e;
    m.size = e.size;
    m.sha256 = e.sha256;
    std::error_code ec;
    if (e.urls.empty()) {
      const bool present = fs::is_regular_file(e.file, ec);
      m.status = present ? "local" : "missing";
      if (present) {
        m.path = e.file;
        m.size = static_cast<std::uint64_t>(fs::file_size(e.file, ec));
      }
    } else if ((m.cached = cached_as(e.name))) {
      m.status = "downloaded";
      m.path = m.cached->path;
      m.size = m.cached->size;
      m.sha256 = m.cached->sha256;
    } else {
      m.status = "not downloaded";
    }
    out.push_back(std::move(m));
  }
  for (const CachedModel& c : cached) {
    if (registry.find(c.name) != nullptr) continue;
    ModelListing m;
    m.name = c.name;
    m.status = "downloaded";
    m.cached = c;
    m.size = c.size;
    m.sha256 = c.sha256;
    m.path = c.path;
    out.push_back(std::move(m));
  }
  for (ModelCache::Partial& p : cache.partials()) {
    ModelListing m;
    m.name = p.name;
    m.status = "partial";
    m.size = p.total;
    m.partial = std::move(p);
    out.push_back(std::move(m));
  }
  return out;
}

SpecKind classify_spec(std::string_view spec) {
  if (spec.starts_with("hf://")) return SpecKind::kHf;
  if (is_url(spec)) return SpecKind::kUrl;
  std::error_code ec;
  if (fs::exists(fs::path(spec), ec)) return SpecKind::kPath;
  if (is_registry_name(spec) && !spec.ends_with(".gguf")) return SpecKind::kName;
  return SpecKind::kPath;
}

std::string model_display_name(const std::string& spec) {
  switch (classify_spec(spec)) {
    case SpecKind::kPath:
      return {};
    case SpecKind::kName:
      return spec;
    case SpecKind::kUrl:
    case SpecKind::kHf:
      break;
  }
  std::string path = spec.substr(0, spec.find_first_of("?#"));
  while (!path.empty() && path.back() == '/') path.pop_back();
  std::string file = path.substr(path.find_last_of('/') + 1);
  if (file.ends_with(".gguf")) file.resize(file.size() - 5);
  return file.empty() ? spec : file;
}

std::string cache_name(const std::string& spec, const std::string& revision) {
  if (classify_spec(spec) == SpecKind::kHf && !revision.empty() && revision != "main") {
    return spec + "@" + revision;
  }
  return spec;
}

PullResult pull(const std::string& spec, const Registry& registry, ModelCache& cache,
                const PullOptions& options) {
  const SpecKind kind = classify_spec(spec);
  const RegistryEntry* entry = nullptr;
  if (kind == SpecKind::kPath && spec.find("://") != std::string::npos) {
    fail<UsageError>("'{}': only https://, http:// and hf:// addresses can be downloaded", spec);
  }
  if (kind == SpecKind::kName || kind == SpecKind::kPath) {
    entry = registry.find(spec);
    std::error_code ec;
    if (entry == nullptr && kind == SpecKind::kPath && fs::exists(spec, ec)) {
      fail<UsageError>("'{}' is a file here already; commands take it as it is (-m {})", spec,
                       spec);
    }
    if (entry == nullptr) {
      std::string names;
      for (const auto& e : registry.entries()) names += (names.empty() ? "" : ", ") + e.name;
      fail<UsageError>(
          "'{}': no model of that name in the registry{}; give a registry name ({}), an "
          "https:// URL or an hf://OWNER/REPO/FILE address",
          spec, registry.suggest(spec), names.empty() ? std::string("there are none") : names);
    }
  }
  const bool hub = kind == SpecKind::kHf ||
                   (entry != nullptr &&
                    std::any_of(entry->urls.begin(), entry->urls.end(),
                                [](const std::string& u) { return u.starts_with("hf://"); }));
  if (options.revision != "main" && !hub) {
    fail<UsageError>("--revision {}: only hf:// addresses have revisions", options.revision);
  }
  if (kind == SpecKind::kUrl) check_url(spec);
  if (kind == SpecKind::kHf) (void)resolve_hf_url(spec, options.revision);
  if (!options.sha256.empty() && !is_sha256_hex(options.sha256)) {
    throw InvalidArgument("sha256", options.sha256, "must be 64 hex digits");
  }
  std::string expected = options.sha256;
  std::transform(expected.begin(), expected.end(), expected.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string expected_from = "given";
  if (entry != nullptr && !entry->sha256.empty()) {
    if (!expected.empty() && expected != entry->sha256) {
      throw InvalidArgument("sha256", expected,
                            fmt::format("the registry ({}) says {} has SHA-256 {}; nothing was "
                                        "downloaded",
                                        entry->origin.string(), entry->name, entry->sha256));
    }
    expected = entry->sha256;
    expected_from = fmt::format("from the registry {}", entry->origin.string());
  }

  // A registry entry for a local file (the shipped default model).
  if (entry != nullptr && entry->urls.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(entry->file, ec)) {
      fail<UsageError>("{}: the registry ({}) names the local file {}, which does not exist",
                       entry->name, entry->origin.string(), entry->file.string());
    }
    PullResult r;
    r.path = entry->file;
    r.name = entry->name;
    r.size = fs::file_size(entry->file, ec);
    r.sha256 = entry->sha256;
    return r;
  }

  const std::string name = entry != nullptr ? entry->name : cache_name(spec, options.revision);
  const bool to_output = !options.output.empty();
  if (!to_output && !options.force) {
    if (auto cached = cache.find(name);
        cached && (expected.empty() || cached->sha256 == expected)) {
      return PullResult{cached->path, name, cached->sha256, cached->size, false, false, 0, 0};
    }
    // The same bytes under another name (a mirror, an alias): no transfer.
    if (auto adopted = cache.adopt(name, spec, expected)) {
      return PullResult{adopted->path, name, adopted->sha256, adopted->size, false, false, 0, 0};
    }
  }

  std::vector<std::string> urls;
  if (entry != nullptr) {
    urls = entry->urls;
  } else {
    urls.push_back(spec);
  }
  fs::path output = to_output ? fs::absolute(options.output) : fs::path();
  if (to_output) {
    std::error_code ec;
    if (fs::is_directory(output, ec)) {  // -o DIR: the file keeps its name
      const std::string base = model_display_name(urls.front());
      output /= (base.empty() ? name : base) + ".gguf";
    }
    if (!fs::is_directory(output.parent_path(), ec)) {
      throw InvalidArgument(
          "output", options.output.string(),
          fmt::format("the folder {} does not exist", output.parent_path().string()));
    }
    if (fs::exists(output, ec) && !options.force) {
      throw InvalidArgument("output", output.string(),
                            "the file exists; add --force to replace it");
    }
  }
  const fs::path partial =
      to_output ? fs::path(output.string() + ".part") : cache.partial_path(name);
  FileLock lock(cache.lock_path(to_output ? "output:" + output.string() : name), options.on_wait,
                name);
  if (!to_output && !options.force) {  // another process may have finished it while we waited
    if (auto cached = cache.find(name);
        cached && (expected.empty() || cached->sha256 == expected)) {
      return PullResult{cached->path, name, cached->sha256, cached->size, false, false, 0, 0};
    }
  }

  std::string failures;
  for (std::size_t i = 0; i < urls.size(); ++i) {
    const std::string& address = urls[i];
    DownloadRequest request;
    request.url =
        address.starts_with("hf://") ? resolve_hf_url(address, options.revision) : address;
    check_url(request.url);
    request.display = name;
    request.sha256 = expected;
    request.size = entry != nullptr ? entry->size : 0;
    if (address.starts_with("hf://")) {
      request.bearer_token = hf_token();
      request.hub = true;
    }
    request.partial = partial;
    request.target = to_output ? output : cache.root();
    DownloadResult got;
    try {
      got = download(request, options.download);
    } catch (const DownloadCancelled&) {
      throw;
    } catch (const DownloadError& e) {
      if (i + 1 == urls.size()) {
        if (failures.empty()) throw;
        fail<DownloadError>("{}; earlier addresses failed too: {}", e.what(), failures);
      }
      failures += (failures.empty() ? "" : "; ") + std::string(e.what());
      if (options.download.on_notice) {
        options.download.on_notice(fmt::format("{}; trying the next address", e.what()));
      }
      continue;
    }
    std::string want = expected;
    std::string want_from = expected_from;
    if (want.empty() && !got.linked_sha256.empty()) {
      want = got.linked_sha256;
      want_from = "published by the server as X-Linked-Etag";
    }
    verify(got, want, want_from, partial, name);
    PullResult r;
    r.name = name;
    r.sha256 = got.sha256;
    r.size = got.size;
    r.downloaded = true;
    r.resumed = got.resumed;
    r.transferred = got.transferred;
    r.receive_seconds = got.receive_seconds;
    if (to_output) {
      if (::rename(partial.c_str(), output.c_str()) != 0) {
        fail<IoError>("{}: cannot move the download into place: {}", output.string(),
                      std::strerror(errno));
      }
      std::error_code ec;
      fs::remove(partial_meta_path(partial), ec);
      fsync_directory(output.parent_path());
      r.path = output;
    } else {
      const CachedModel m = cache.add(name, request.url, got.sha256, got.size, partial);
      std::error_code ec;
      fs::remove(partial_meta_path(partial), ec);
      r.path = m.path;
    }
    return r;
  }
  throw InternalError("pull: no address to try");
}

std::string resolve_model(const std::string& spec, const ResolveOptions& options) {
  if (spec.empty()) return model_or_default(spec);
  const SpecKind kind = classify_spec(spec);
  if (kind == SpecKind::kPath) return spec;
  const Registry registry = Registry::load();
  const RegistryEntry* entry = registry.find(spec);
  if (kind == SpecKind::kName && entry == nullptr) {
    fail<UsageError>(
        "{} {}: no such file, and no model of that name in the registry{} (see "
        "'nanochat models list')",
        options.subject, spec, registry.suggest(spec));
  }
  ModelCache cache = ModelCache::open_default();
  if (entry != nullptr && entry->urls.empty()) {
    return pull(spec, registry, cache, options.pull).path.string();
  }
  const std::string name = entry != nullptr ? entry->name : cache_name(spec, options.pull.revision);
  if (auto cached = cache.find(name)) return cached->path.string();
  if (!options.allow_pull && (entry == nullptr || !entry->pull)) {
    fail<UsageError>("{} {}: not downloaded yet; run 'nanochat download {}' first, or {}",
                     options.subject, spec, spec, options.pull_hint);
  }
  return pull(spec, registry, cache, options.pull).path.string();
}

}  // namespace nanochat::zoo
