#include "nanochat/util/paths.hpp"

#include <algorithm>
#include <mutex>
#include <system_error>

#include "nanochat/version.hpp"

namespace nanochat {
namespace fs = std::filesystem;

namespace {
std::mutex g_extra_mutex;
std::vector<fs::path>& extra_dirs() {
  static std::vector<fs::path> dirs;
  return dirs;
}
}  // namespace

void add_data_dir(const fs::path& dir) {
  const std::lock_guard lock(g_extra_mutex);
  auto& dirs = extra_dirs();
  if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
}

std::vector<fs::path> data_dirs() {
  std::vector<fs::path> out;
  {
    const std::lock_guard lock(g_extra_mutex);
    out = extra_dirs();
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && !exe.empty()) {
    out.push_back((exe.parent_path() / ".." / "share" / "nanochat").lexically_normal());
  }
  const fs::path installed = fs::path(build::kInstallPrefix) / "share" / "nanochat";
  if (std::find(out.begin(), out.end(), installed) == out.end()) out.push_back(installed);
  return out;
}

std::optional<fs::path> find_data_file(const fs::path& relative) {
  for (const auto& dir : data_dirs()) {
    std::error_code ec;
    if (fs::is_regular_file(dir / relative, ec)) return dir / relative;
  }
  return std::nullopt;
}

}  // namespace nanochat
