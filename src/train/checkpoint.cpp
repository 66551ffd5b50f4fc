#include "nanochat/train/checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nanochat/util/error.hpp"
#include "nanochat/util/file.hpp"

namespace nanochat::train {
namespace fs = std::filesystem;
namespace {

constexpr char kMagic[8] = {'N', 'C', 'C', 'K', 'P', 'T', 0, 0};

std::uint64_t fnv1a(std::span<const std::uint8_t> bytes, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (std::uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

template <typename T>
std::span<const std::uint8_t> raw(const T& v) {
  return {reinterpret_cast<const std::uint8_t*>(&v), sizeof(T)};
}

}  // namespace

const CheckpointTensor* Checkpoint::find(const std::string& name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

fs::path save_checkpoint(const fs::path& dir, const Checkpoint& c, std::int64_t keep_last) {
  make_directories(dir);
  nlohmann::json h;
  h["step"] = c.step;
  h["elapsed_s"] = c.elapsed_s;
  h["config"] = c.config_toml;
  h["data_fingerprint"] = c.fingerprint;
  std::uint64_t offset = 0;
  auto& table = h["tensors"] = nlohmann::json::array();
  for (const auto& t : c.tensors) {
    table.push_back({{"name", t.name}, {"offset", offset}, {"count", t.data.size()}});
    offset += t.data.size() * sizeof(float);
  }
  h["tokenizer"] = {{"offset", offset}, {"bytes", c.tokenizer_gguf.size()}};
  const std::string header = h.dump();

  fs::path path = dir / fmt::format("step-{:08}.nckpt", c.step);
  AtomicFile f(path);
  std::uint64_t hash = 0xcbf29ce484222325ull;
  auto put = [&](std::span<const std::uint8_t> bytes) {
    hash = fnv1a(bytes, hash);
    f.write(bytes);
  };
  put({reinterpret_cast<const std::uint8_t*>(kMagic), 8});
  put(raw(kCheckpointVersion));
  put(raw(std::uint32_t{0}));
  put(raw(static_cast<std::uint64_t>(header.size())));
  put({reinterpret_cast<const std::uint8_t*>(header.data()), header.size()});
  for (const auto& t : c.tensors) {
    put({reinterpret_cast<const std::uint8_t*>(t.data.data()), t.data.size() * sizeof(float)});
  }
  put(c.tokenizer_gguf);
  f.write(raw(hash));
  f.commit();

  // Keep the newest keep_last.
  const auto all = list_checkpoints(dir);
  for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(keep_last, 1));
       i < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
  return path;
}

Checkpoint load_checkpoint(const fs::path& path) {
  const MappedFile file(path);
  const auto bytes = file.bytes();
  const std::string name = path.string();
  if (bytes.size() < 32 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    fail<FormatError>("{}: not a nanochat checkpoint (bad magic or too short)", name);
  }
  std::uint32_t version;
  std::memcpy(&version, bytes.data() + 8, 4);
  if (version != kCheckpointVersion) {
    fail<FormatError>("{}: checkpoint format version {}; this nanochat reads version {}", name,
                      version, kCheckpointVersion);
  }
  std::uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (fnv1a(bytes.first(bytes.size() - 8)) != stored) {
    fail<FormatError>(
        "{}: checksum mismatch: the file is truncated or damaged; resume from an earlier "
        "checkpoint",
        name);
  }
  std::uint64_t header_len;
  std::memcpy(&header_len, bytes.data() + 16, 8);
  const std::uint64_t body = bytes.size() - 8;
  if (header_len > body - 24)
    fail<FormatError>("{}: header length {} is too large", name, header_len);
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.begin() + 24,
                              bytes.begin() + 24 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const std::exception& e) {
    fail<FormatError>("{}: unreadable header: {}", name, e.what());
  }
  const std::uint64_t data0 = 24 + header_len;
  Checkpoint c;
  try {
    c.step = h.at("step").get<std::int64_t>();
    c.elapsed_s = h.at("elapsed_s").get<double>();
    c.config_toml = h.at("config").get<std::string>();
    c.fingerprint = h.at("data_fingerprint").get<std::string>();
    for (const auto& t : h.at("tensors")) {
      const auto off = t.at("offset").get<std::uint64_t>();
      const auto count = t.at("count").get<std::uint64_t>();
      if (count > body || off > body || data0 + off + count * sizeof(float) > body) {
        fail<FormatError>("{}: tensor '{}' lies outside the file", name,
                          t.at("name").get<std::string>());
      }
      CheckpointTensor ct;
      ct.name = t.at("name").get<std::string>();
      ct.data.resize(count);
      std::memcpy(ct.data.data(), bytes.data() + data0 + off, count * sizeof(float));
      c.tensors.push_back(std::move(ct));
    }
    const auto tok_off = h.at("tokenizer").at("offset").get<std::uint64_t>();
    const auto tok_len = h.at("tokenizer").at("bytes").get<std::uint64_t>();
    if (tok_off > body || tok_len > body || data0 + tok_off + tok_len > body) {
      fail<FormatError>("{}: the tokenizer lies outside the file", name);
    }
    c.tokenizer_gguf.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data0 + tok_off),
                            bytes.begin() + static_cast<std::ptrdiff_t>(data0 + tok_off + tok_len));
  } catch (const nlohmann::json::exception& e) {
    fail<FormatError>("{}: header is missing a field: {}", name, e.what());
  }
  return c;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() == 19 && n.rfind("step-", 0) == 0 && n.ends_with(".nckpt"))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

}  // namespace nanochat::train
