// The repacked-weights cache: a model's ternary matrices and Q8_0 head in the runtime layouts,
// kept in one file of the cache directory so that the next load maps them instead of repacking.
//
// A file is a header and byte blobs (each at a 4096-byte boundary, so mapped blobs are as aligned
// as the buffers they replace):
//   "NCWCACHE" | u64 version | u64 file size | u64 key bytes | u64 blobs | 32-byte SHA-256
//   | key | blobs x (u64 offset, u64 size) | padding | blobs
// The SHA-256 covers every header byte but its own; the key names what the blobs were made from
// and for (the model file's identity, the CPU, each matrix's layout): a file whose header, size or
// key does not match is not used (the caller repacks and writes it again). The blobs themselves
// are not hashed — hashing 1 GB would cost what repacking does; a crash cannot leave a partial
// file (written atomically), and a changed model file changes the key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nanochat/util/file.hpp"

namespace nanochat::model {

class WeightCache {
 public:
  static constexpr std::uint64_t kVersion = 1;
  static constexpr std::size_t kAlign = 4096;

  // Maps `path` when it is a cache file written under `key` whose blobs have the sizes
  // `blob_sizes`. Otherwise nullopt, with `why` saying what was wrong (empty when there is no
  // file). Never throws for what the file holds.
  static std::optional<WeightCache> open(const std::filesystem::path& path, std::string_view key,
                                         std::span<const std::uint64_t> blob_sizes,
                                         std::string& why);
  // Writes `blobs` under `key` to `path` atomically (AtomicFile: temporary, fsync, rename),
  // creating its folder. Throws IoError.
  static void write(const std::filesystem::path& path, std::string_view key,
                    std::span<const std::span<const std::uint8_t>> blobs);

  // Keeps the cache folder `dir` bounded when `keep` is written there (`incoming_bytes` long, or
  // its size on disk when 0): removes this CPU's cache files whose model file (the key's "file
  // PATH" line) no longer exists while its folder does, then, while the cache files add up to
  // more than `budget_bytes`, the least recently used ones (oldest modification time; a mapped
  // file is touched on use). `keep` is never removed, nor is anything that is not a weight cache
  // file (temporaries, links, other files). Each removal is logged; nothing here throws. Returns
  // the files removed.
  static std::vector<std::filesystem::path> prune(const std::filesystem::path& dir,
                                                  const std::filesystem::path& keep,
                                                  std::uint64_t budget_bytes,
                                                  std::uint64_t incoming_bytes = 0);
  // The budget: NANOCHAT_WEIGHT_CACHE_MAX_GB (GiB, a positive number) or 8 GiB.
  static std::uint64_t budget_from_env();

  std::size_t size() const { return table_.size(); }
  std::span<const std::uint8_t> blob(std::size_t i) const {
    return file_->bytes().subspan(table_[i].first, table_[i].second);
  }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> table_;  // offset, size
};

}  // namespace nanochat::model
