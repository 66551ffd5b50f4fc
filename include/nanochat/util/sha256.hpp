// SHA-256 (OpenSSL's implementation), fed incrementally, as lowercase hex.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace nanochat {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::span<const std::uint8_t> bytes);
  void update(std::string_view bytes);
  // The digest of everything fed so far, as 64 lowercase hex digits. Ends the hash: feed a new
  // Sha256 to start again.
  std::string finish();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

// The SHA-256 of a whole file, read in pieces. Throws IoError naming the path.
std::string sha256_file(const std::filesystem::path& path);

// True when `hex` is 64 hex digits (either case).
bool is_sha256_hex(std::string_view hex);

}  // namespace nanochat
