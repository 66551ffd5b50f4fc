#include "nanochat/model/weight_cache.hpp"

#include <fmt/format.h>

#include <array>
#include <cstring>

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

}  // namespace nanochat::model
