#include "nanochat/zoo/registry.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "nanochat/util/error.hpp"
#include "nanochat/util/paths.hpp"
#include "nanochat/util/sha256.hpp"

namespace nanochat::zoo {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kKeys[] = {"name",    "description",  "url", "file", "sha256", "size",
                                      "license", "architecture", "use", "note", "pull"};

std::string entry_where(const fs::path& file, std::size_t index, const std::string& name,
                        const toml::table& t) {
  const auto line = t.source().begin.line;
  return name.empty() ? fmt::format("{}:{}: model #{}", file.string(), line, index + 1)
                      : fmt::format("{}:{}: model '{}'", file.string(), line, name);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string string_field(const toml::table& t, std::string_view key, const std::string& where) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return {};
  const auto* s = node->as_string();
  if (s == nullptr) fail<FormatError>("{}: '{}' must be a string", where, key);
  return s->get();
}

bool is_url(std::string_view u) {
  return u.starts_with("http://") || u.starts_with("https://") || u.starts_with("hf://");
}

RegistryEntry parse_entry(const toml::table& t, const fs::path& file, std::size_t index) {
  RegistryEntry e;
  std::string where = entry_where(file, index, "", t);
  for (const auto& [key, value] : t) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key.str()) == std::end(kKeys)) {
      fail<FormatError>(
          "{}: unknown field '{}' (fields: name, description, url, file, sha256, "
          "size, license, architecture, use, note, pull)",
          where, key.str());
    }
  }
  e.name = string_field(t, "name", where);
  if (e.name.empty()) fail<FormatError>("{}: 'name' is missing", where);
  if (!is_registry_name(e.name)) {
    fail<FormatError>(
        "{}: name '{}' must be lowercase letters, digits, '.', '_' or '-', starting "
        "with a letter or digit",
        where, e.name);
  }
  where = entry_where(file, index, e.name, t);
  e.description = string_field(t, "description", where);
  e.license = string_field(t, "license", where);
  e.architecture = string_field(t, "architecture", where);
  e.use = string_field(t, "use", where);
  e.note = string_field(t, "note", where);
  if (const toml::node* u = t.get("url")) {
    if (const auto* s = u->as_string()) {
      e.urls.push_back(s->get());
    } else if (const auto* a = u->as_array()) {
      for (const auto& item : *a) {
        const auto* s2 = item.as_string();
        if (s2 == nullptr) fail<FormatError>("{}: 'url' must hold strings", where);
        e.urls.push_back(s2->get());
      }
    } else {
      fail<FormatError>("{}: 'url' must be a string or an array of strings", where);
    }
  }
  for (const auto& u : e.urls) {
    if (!is_url(u)) {
      fail<FormatError>("{}: url '{}' must start with https://, http:// or hf://", where, u);
    }
  }
  if (const std::string f = string_field(t, "file", where); !f.empty()) {
    e.file = fs::path(f).is_absolute() ? fs::path(f) : file.parent_path() / f;
  }
  if (e.urls.empty() && e.file.empty()) {
    fail<FormatError>("{}: give 'url' (where to download it) or 'file' (a local file)", where);
  }
  e.sha256 = string_field(t, "sha256", where);
  if (!e.sha256.empty()) {
    if (!is_sha256_hex(e.sha256)) {
      fail<FormatError>("{}: sha256 '{}' must be 64 hex digits", where, e.sha256);
    }
    std::transform(e.sha256.begin(), e.sha256.end(), e.sha256.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  if (const toml::node* s = t.get("size")) {
    const auto* i = s->as_integer();
    if (i == nullptr || i->get() <= 0) {
      fail<FormatError>("{}: 'size' must be a positive number of bytes", where);
    }
    e.size = static_cast<std::uint64_t>(i->get());
  }
  if (const toml::node* p = t.get("pull")) {
    const auto* b = p->as_boolean();
    if (b == nullptr) fail<FormatError>("{}: 'pull' must be true or false", where);
    e.pull = b->get();
  }
  e.origin = file;
  return e;
}

void load_file(const fs::path& file, std::vector<RegistryEntry>& entries) {
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& err) {
    fail<FormatError>("{}:{}:{}: {}", file.string(), err.source().begin.line,
                      err.source().begin.column, err.description());
  }
  for (const auto& [key, value] : root) {
    if (key.str() != "model") {
      fail<FormatError>("{}: unknown top-level key '{}'; entries are [[model]] tables",
                        file.string(), key.str());
    }
  }
  const toml::node* models = root.get("model");
  if (models == nullptr) return;
  const auto* array = models->as_array();
  if (array == nullptr || !array->is_array_of_tables()) {
    fail<FormatError>("{}: 'model' must be an array of tables ([[model]])", file.string());
  }
  std::vector<std::string> seen;
  for (std::size_t i = 0; i < array->size(); ++i) {
    RegistryEntry e = parse_entry(*array->get(i)->as_table(), file, i);
    if (std::find(seen.begin(), seen.end(), e.name) != seen.end()) {
      fail<FormatError>("{}: model '{}' is listed twice", file.string(), e.name);
    }
    seen.push_back(e.name);
    const auto old = std::find_if(entries.begin(), entries.end(),
                                  [&](const RegistryEntry& x) { return x.name == e.name; });
    if (old != entries.end()) {
      *old = std::move(e);
    } else {
      entries.push_back(std::move(e));
    }
  }
}

}  // namespace

bool is_registry_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  const auto ok_start = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok_start(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return ok_start(c) || c == '.' || c == '_' || c == '-'; });
}

fs::path config_dir() {
  if (const char* env = std::getenv("NANOCHAT_CONFIG"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg != '\0') {
    return fs::path(xdg) / "nanochat";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return fs::path(home) / ".config" / "nanochat";
  }
  return fs::path(".config") / "nanochat";
}

fs::path user_registry_path() { return config_dir() / "registry.toml"; }

Registry Registry::from_files(const std::vector<fs::path>& files) {
  Registry r;
  for (const auto& f : files) {
    load_file(f, r.entries_);
    r.files_.push_back(f);
  }
  return r;
}

Registry Registry::load() {
  std::vector<fs::path> files;
  if (const auto shipped = find_data_file(fs::path("models") / "registry.toml")) {
    files.push_back(*shipped);
  }
  std::error_code ec;
  if (const fs::path user = user_registry_path(); fs::is_regular_file(user, ec)) {
    files.push_back(user);
  }
  return from_files(files);
}

std::string Registry::suggest(std::string_view name) const {
  std::vector<std::pair<std::size_t, std::string>> close;
  for (const auto& e : entries_) {
    const std::size_t d = edit_distance(name, e.name);
    const bool contains = name.size() >= 3 && e.name.find(name) != std::string::npos;
    if (d <= std::max<std::size_t>(2, e.name.size() / 3) || contains) close.emplace_back(d, e.name);
  }
  if (close.empty()) return {};
  std::sort(close.begin(), close.end());
  std::string out = " (did you mean ";
  for (std::size_t i = 0; i < close.size() && i < 3; ++i) {
    out += (i == 0 ? "" : ", ") + close[i].second;
  }
  return out + "?)";
}

const RegistryEntry* Registry::find(std::string_view name) const {
  const auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const RegistryEntry& e) { return e.name == name; });
  return it == entries_.end() ? nullptr : &*it;
}

}  // namespace nanochat::zoo
