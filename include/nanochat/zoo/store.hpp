// The model cache and what -m and `nanochat download` do with a model's name or address.
//
// Cache layout (under cache_dir()/models, safe to share between processes):
//   blobs/sha256-<hex>       verified files, named by their content
//   index.json               name (registry name or address) -> blob, size, source, time
//   partial/<key>.part[.json] a transfer in progress and its resume data
//   locks/<key>.lock         held (flock) by the process downloading <key>
// A file enters blobs/ only after its SHA-256 and GGUF header were checked, by an atomic rename.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nanochat/zoo/download.hpp"
#include "nanochat/zoo/registry.hpp"

namespace nanochat::zoo {

struct CachedModel {
  std::string name;  // a registry name, or the address it was downloaded from
  std::string sha256;
  std::uint64_t size = 0;
  std::string source;          // the URL the bytes came from
  std::string added;           // UTC, ISO 8601
  std::filesystem::path path;  // the blob
};

class ModelCache {
 public:
  explicit ModelCache(std::filesystem::path root);
  // cache_dir()/models.
  static ModelCache open_default();

  const std::filesystem::path& root() const { return root_; }
  // The entry for `name` whose blob exists.
  std::optional<CachedModel> find(std::string_view name) const;
  std::vector<CachedModel> list() const;
  // Moves the verified, fsynced `file` into blobs/ (or drops it when that blob is already there)
  // and records `name` -> blob, replacing an older entry of that name.
  CachedModel add(const std::string& name, const std::string& source, const std::string& sha256,
                  std::uint64_t size, const std::filesystem::path& file);
  // Records `name` -> the blob `sha256` already in the cache (another name downloaded the same
  // bytes); nullopt when that blob is not there.
  std::optional<CachedModel> adopt(const std::string& name, const std::string& source,
                                   const std::string& sha256);
  struct Removed {
    bool found = false;
    std::uint64_t bytes_freed = 0;    // 0 when another name still uses the blob
    std::uint64_t partial_bytes = 0;  // of an unfinished download removed with it
  };
  // Forgets `name` and its partial download; deletes its blob unless another name refers to it.
  Removed remove(std::string_view name);

  // Unfinished downloads (what a later pull resumes).
  struct Partial {
    std::string name;
    std::string url;
    std::uint64_t bytes = 0;
    std::uint64_t total = 0;  // 0 when unknown
  };
  std::vector<Partial> partials() const;

  std::filesystem::path blob_path(std::string_view sha256) const;
  std::filesystem::path partial_path(std::string_view name) const;
  std::filesystem::path lock_path(std::string_view name) const;

 private:
  std::filesystem::path root_;
};

// One model as `nanochat models` and Python's nanochat.models() show it: a registry entry (with
// its download, if any), a download under a name the registry does not have, or an unfinished
// download.
struct ModelListing {
  std::string name;
  std::string status;  // "local", "missing", "downloaded", "not downloaded" or "partial"
  std::optional<RegistryEntry> entry;
  std::optional<CachedModel> cached;
  std::optional<ModelCache::Partial> partial;
  std::uint64_t size = 0;      // the file's, else the registry's (0: unknown)
  std::string sha256;          // the file's, else the registry's (empty: unknown)
  std::filesystem::path path;  // the local or downloaded file (empty: none yet)
};

// Everything the registry and the cache hold, registry entries first; the cache's index is read
// once.
std::vector<ModelListing> list_models(const Registry& registry, const ModelCache& cache);

// How a -m value or a `download` argument is read.
enum class SpecKind { kPath, kName, kUrl, kHf };
SpecKind classify_spec(std::string_view spec);

struct PullOptions {
  std::string revision = "main";  // for hf:// addresses
  std::string sha256;             // expected digest (overrides the registry's)
  std::filesystem::path output;   // write here instead of the cache
  bool force = false;             // download even when cached
  DownloadOptions download;
  std::function<void(const std::string&)> on_wait;  // another process holds the download's lock
};

struct PullResult {
  std::filesystem::path path;
  std::string name;
  std::string sha256;  // empty for a registry entry's local file
  std::uint64_t size = 0;
  bool downloaded = false;  // false: found in the cache or a local file
  bool resumed = false;
  std::uint64_t transferred = 0;
  double receive_seconds = 0;
};

// Fetches a registry name, an http(s):// URL or an hf:// address into the cache (or
// options.output): verified against the expected SHA-256 (given, from the registry, or
// published by the server) and as a GGUF file before it becomes visible, under a lock so that
// concurrent pulls of the same name share one transfer. A cached model is returned at once
// unless options.force. Throws UsageError for an unknown name, DownloadError when the transfer
// or a check fails (nothing unverified is left visible).
PullResult pull(const std::string& spec, const Registry& registry, ModelCache& cache,
                const PullOptions& options);

// How a model given as `spec` is called (an API's model id): a registry name as is; an address's
// file name without ".gguf"; empty for a path (callers use the file's own name).
std::string model_display_name(const std::string& spec);

// The cache's name for a spec: the registry name, the URL, or the hf:// address with a
// non-default revision appended as "@REV".
std::string cache_name(const std::string& spec, const std::string& revision);

struct ResolveOptions {
  bool allow_pull = false;  // --pull: download what is not cached
  PullOptions pull;
  std::string subject = "-m";                               // how messages name the model
  std::string pull_hint = "add --pull to download it now";  // how the caller allows pulling
};

// What -m names, as a file path: an existing file as is; a registry name, URL or hf:// address
// from the cache, downloaded first when allowed (options.allow_pull or the registry entry's
// `pull`), else a UsageError naming the command that fetches it. An empty spec is the default
// model.
std::string resolve_model(const std::string& spec, const ResolveOptions& options);

}  // namespace nanochat::zoo
