#include "nanochat/model/weight_cache.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "nanochat/util/cpu.hpp"
#include "nanochat/util/error.hpp"
#include "nanochat/util/sha256.hpp"

namespace nanochat::model {
namespace {

constexpr char kMagic[8] = {'N', 'C', 'W', 'C', 'A', 'C', 'H', 'E'};
constexpr std::size_t kFixed = 8 + 4 * 8;  // magic and the four u64 fields
constexpr std::size_t kHash = 32;
constexpr std::uint64_t kMaxKey = 1u << 20;
constexpr std::uint64_t kMaxBlobs = 1u << 20;

std::uint64_t align_up(std::uint64_t n) {
  return (n + WeightCache::kAlign - 1) / WeightCache::kAlign * WeightCache::kAlign;
}

std::uint64_t read_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}

void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out.append(b, 8);
}

// SHA-256 of the header without its hash field, as 32 raw bytes.
std::array<std::uint8_t, kHash> header_hash(std::span<const std::uint8_t> fixed,
                                            std::span<const std::uint8_t> rest) {
  Sha256 h;
  h.update(fixed);
  h.update(rest);
  const std::string hex = h.finish();
  std::array<std::uint8_t, kHash> out{};
  for (std::size_t i = 0; i < kHash; ++i) {
    out[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

}  // namespace

std::optional<WeightCache> WeightCache::open(const std::filesystem::path& path,
                                             std::string_view key,
                                             std::span<const std::uint64_t> blob_sizes,
                                             std::string& why) {
  why.clear();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  WeightCache c;
  try {
    c.file_ = std::make_shared<MappedFile>(path);
  } catch (const Error& e) {
    why = e.what();
    return std::nullopt;
  }
  const std::span<const std::uint8_t> b = c.file_->bytes();
  const auto bad = [&](std::string reason) {
    why = std::move(reason);
    return std::nullopt;
  };
  if (b.size() < kFixed + kHash) return bad("shorter than its header (truncated)");
  if (std::memcmp(b.data(), kMagic, sizeof kMagic) != 0) return bad("not a weight cache file");
  const std::uint64_t version = read_u64(b.data() + 8), size = read_u64(b.data() + 16);
  const std::uint64_t key_bytes = read_u64(b.data() + 24), blobs = read_u64(b.data() + 32);
  if (version != kVersion) {
    return bad(fmt::format("of version {}, not {}", version, kVersion));
  }
  if (size != b.size()) {
    return bad(fmt::format("{} bytes long instead of {} (truncated or damaged)", b.size(), size));
  }
  if (key_bytes > kMaxKey || blobs > kMaxBlobs) return bad("damaged (its header is not valid)");
  const std::uint64_t header = kFixed + kHash + key_bytes + 16 * blobs;
  if (header > b.size()) return bad("shorter than its header (truncated)");
  const auto want =
      header_hash(b.first(kFixed), b.subspan(kFixed + kHash, header - kFixed - kHash));
  if (std::memcmp(want.data(), b.data() + kFixed, kHash) != 0) {
    return bad("damaged (its header checksum does not match)");
  }
  const std::string_view stored(reinterpret_cast<const char*>(b.data() + kFixed + kHash),
                                key_bytes);
  if (stored != key) return bad("stale (made from another file, layout or CPU)");
  if (blobs != blob_sizes.size()) return bad("stale (it holds other matrices)");
  const std::uint8_t* table = b.data() + kFixed + kHash + key_bytes;
  for (std::uint64_t i = 0; i < blobs; ++i) {
    const std::uint64_t offset = read_u64(table + 16 * i), bytes = read_u64(table + 16 * i + 8);
    if (offset % kAlign != 0 || offset < header || offset > size || bytes > size - offset) {
      return bad("damaged (a blob lies outside the file)");
    }
    if (bytes != blob_sizes[i]) return bad("stale (a matrix has another size)");
    c.table_.emplace_back(offset, bytes);
  }
  return c;
}

void WeightCache::write(const std::filesystem::path& path, std::string_view key,
                        std::span<const std::span<const std::uint8_t>> blobs) {
  std::string fixed(kMagic, sizeof kMagic);
  std::string rest(key);
  const std::uint64_t header = kFixed + kHash + key.size() + 16 * blobs.size();
  std::uint64_t size = header;  // the file ends right after the last blob
  for (const auto& blob : blobs) {
    const std::uint64_t offset = align_up(size);
    put_u64(rest, offset);
    put_u64(rest, blob.size());
    size = offset + blob.size();
  }
  put_u64(fixed, kVersion);
  put_u64(fixed, size);
  put_u64(fixed, key.size());
  put_u64(fixed, blobs.size());
  const auto as_bytes = [](const std::string& s) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  const auto hash = header_hash(as_bytes(fixed), as_bytes(rest));
  make_directories(path.parent_path());
  AtomicFile out(path);
  out.write(as_bytes(fixed));
  out.write(std::span<const std::uint8_t>(hash));
  out.write(as_bytes(rest));
  const std::string zeros(kAlign, '\0');
  for (const auto& blob : blobs) {
    out.write(std::string_view(zeros).substr(0, align_up(out.written()) - out.written()));
    out.write(blob);
  }
  if (out.written() != size) {
    fail<IoError>("{}: wrote {} bytes instead of {}", path.string(), out.written(), size);
  }
  out.commit();
}

namespace {

// The key of a weight cache file read from its header, or nullopt for anything else.
std::optional<std::string> stored_key(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, kFixed> fixed{};
  if (!in.read(fixed.data(), fixed.size())) return std::nullopt;
  if (std::memcmp(fixed.data(), kMagic, sizeof kMagic) != 0) return std::nullopt;
  const std::uint64_t key_bytes =
      read_u64(reinterpret_cast<const std::uint8_t*>(fixed.data()) + 24);
  if (key_bytes > kMaxKey) return std::nullopt;
  std::string key(key_bytes, '\0');
  in.seekg(static_cast<std::streamoff>(kFixed + kHash));
  if (!in.read(key.data(), static_cast<std::streamsize>(key.size()))) return std::nullopt;
  return key;
}

}  // namespace

std::uint64_t WeightCache::budget_from_env() {
  constexpr std::uint64_t kDefault = std::uint64_t{8} << 30;
  const char* env = std::getenv("NANOCHAT_WEIGHT_CACHE_MAX_GB");
  if (env == nullptr || *env == '\0') return kDefault;
  char* end = nullptr;
  const double gib = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(gib > 0) || gib > 1e6) {
    spdlog::warn("NANOCHAT_WEIGHT_CACHE_MAX_GB={} is not a positive number of GiB; using 8", env);
    return kDefault;
  }
  return static_cast<std::uint64_t>(gib * static_cast<double>(std::uint64_t{1} << 30));
}

std::vector<std::filesystem::path> WeightCache::prune(const std::filesystem::path& dir,
                                                      const std::filesystem::path& keep,
                                                      std::uint64_t budget_bytes,
                                                      std::uint64_t incoming_bytes) {
  namespace fs = std::filesystem;
  struct Entry {
    fs::path path;
    std::uint64_t bytes;
    fs::file_time_type used;
  };
  std::vector<Entry> entries;
  std::vector<fs::path> removed;
  // What the other files may hold: the budget less the file being written (or already written).
  std::uint64_t room = budget_bytes > incoming_bytes ? budget_bytes - incoming_bytes : 0;
  bool keep_counted = incoming_bytes > 0;
  std::error_code ec;
  const auto remove = [&](const fs::path& path, const std::string& why) {
    std::error_code rm;
    if (fs::remove(path, rm)) {
      spdlog::info("removed the weight cache file {}: {}", path.string(), why);
      removed.push_back(path);
      return true;
    }
    return false;
  };
  const fs::path folder = dir.empty() ? fs::path(".") : dir;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    if (path.extension() != ".bin" || path.filename().string().starts_with(".")) continue;
    std::error_code st;
    // Links are left alone (removing one frees nothing), as is what cannot be examined (another
    // process may be removing files as this one looks).
    const bool link = it->is_symlink(st);
    if (st || link) continue;
    const bool regular = it->is_regular_file(st);
    if (st || !regular) continue;
    const std::optional<std::string> key = stored_key(path);
    if (!key) continue;  // not a weight cache file: left alone
    const bool is_keep = fs::equivalent(path, keep, st);
    // The key's second line names the model file it was made from. An orphan is only a file this
    // kind of CPU wrote (a shared home folder holds other machines' files) whose model's folder is
    // still there (a model on an unmounted disk is not gone).
    const std::size_t at = key->find("\nfile ");
    const bool ours = path.filename().string().find(cpu_info().signature()) != std::string::npos;
    if (!is_keep && ours && at != std::string::npos) {
      const std::size_t from = at + 6, to = key->find('\n', from);
      const fs::path model = key->substr(from, to == std::string::npos ? to : to - from);
      std::error_code gone;
      if (fs::is_directory(model.parent_path(), gone) && !gone && !fs::exists(model, gone) &&
          !gone &&
          remove(path, fmt::format("its model file {} no longer exists", model.string()))) {
        continue;
      }
    }
    const std::uintmax_t bytes = it->file_size(st);
    if (st) continue;
    const fs::file_time_type used = it->last_write_time(st);
    if (st) continue;
    Entry e{path, static_cast<std::uint64_t>(bytes), used};
    if (!is_keep) entries.push_back(e);
    if (is_keep && !keep_counted) {
      room = room > e.bytes ? room - e.bytes : 0;
      keep_counted = true;
    }
  }
  std::uint64_t total = 0;
  for (const Entry& e : entries) total += e.bytes;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.used < b.used; });
  for (const Entry& e : entries) {
    if (total <= room) break;
    if (remove(e.path, fmt::format("the least recently used, beyond the cache's {:.1f} GiB "
                                   "(NANOCHAT_WEIGHT_CACHE_MAX_GB)",
                                   static_cast<double>(budget_bytes) / (1u << 30)))) {
      total -= e.bytes;
    }
  }
  return removed;
}

}  // namespace nanochat::model
