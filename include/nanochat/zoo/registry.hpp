// The model registry: names a user can pass to -m and `nanochat download`, each with where to get
// the file, its SHA-256 and size, and what it is. The shipped registry (models/registry.toml,
// installed in <prefix>/share/nanochat/models/) lists the default model and public ternary
// models; the user's $XDG_CONFIG_HOME/nanochat/registry.toml adds entries or replaces shipped
// ones of the same name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nanochat::zoo {

struct RegistryEntry {
  std::string name;               // what -m and `download` take: [a-z0-9][a-z0-9._-]*
  std::string description;        // one line
  std::vector<std::string> urls;  // http(s):// or hf://OWNER/REPO/FILE, tried in order
  std::filesystem::path file;     // a local file (the shipped default model), absolute
  std::string sha256;             // 64 lowercase hex digits, or empty when not published
  std::uint64_t size = 0;         // bytes; 0 when unknown
  std::string license;
  std::string architecture;
  std::string use;    // what it is for
  std::string note;   // anything a user must know (a format nanochat does not run yet, ...)
  bool pull = false;  // -m NAME may download it without --pull
  std::filesystem::path origin;  // the registry file that defined it
};

class Registry {
 public:
  // The shipped registry (the first models/registry.toml found under util/paths.hpp's
  // data_dirs()) overlaid with the user's (user_registry_path(), if it exists). Throws
  // FormatError naming the file, entry and field for a bad file.
  static Registry load();
  // The given files, later ones overriding earlier entries of the same name.
  static Registry from_files(const std::vector<std::filesystem::path>& files);

  const RegistryEntry* find(std::string_view name) const;
  // " (did you mean a, b?)" naming the entries closest to `name` by edit distance, or "".
  std::string suggest(std::string_view name) const;
  const std::vector<RegistryEntry>& entries() const { return entries_; }
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  std::vector<RegistryEntry> entries_;
  std::vector<std::filesystem::path> files_;
};

// $NANOCHAT_CONFIG, else $XDG_CONFIG_HOME/nanochat, else ~/.config/nanochat.
std::filesystem::path config_dir();
// config_dir()/registry.toml.
std::filesystem::path user_registry_path();

// True when `name` is spelled as a registry name may be.
bool is_registry_name(std::string_view name);

}  // namespace nanochat::zoo
