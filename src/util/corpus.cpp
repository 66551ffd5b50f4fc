#include "nanochat/util/corpus.hpp"

#include <glob.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>

#include "nanochat/util/error.hpp"

namespace nanochat {
namespace fs = std::filesystem;
namespace {

bool looks_binary(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[8192];
  in.read(buf, sizeof(buf));
  return std::find(buf, buf + in.gcount(), '\0') != buf + in.gcount();
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.size() > 1 && name[0] == '.' && name != "..";
}

}  // namespace

CorpusFiles collect_corpus(const std::vector<std::string>& inputs,
                           const std::vector<std::string>& extensions) {
  CorpusFiles out;
  std::set<fs::path> files;
  auto wanted = [&](const fs::path& p) {
    if (extensions.empty()) return true;
    const std::string ext = p.extension().string();
    return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
  };
  auto add_file = [&](const fs::path& p, bool explicit_file) {
    if (!explicit_file && !wanted(p)) {
      ++out.skipped_extension;
      return;
    }
    if (looks_binary(p)) {
      ++out.skipped_binary;
      return;
    }
    files.insert(fs::weakly_canonical(p));
  };
  std::function<void(const fs::path&, bool)> add_path = [&](const fs::path& p, bool explicit_file) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (auto it = fs::recursive_directory_iterator(
               p, fs::directory_options::skip_permission_denied, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        if (hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) add_file(it->path(), false);
      }
    } else if (fs::is_regular_file(p, ec)) {
      add_file(p, explicit_file);
    }
  };
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::exists(input, ec)) {
      add_path(input, true);
      continue;
    }
    if (input.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      const int rc = ::glob(input.c_str(), 0, nullptr, &g);
      if (rc != 0 || g.gl_pathc == 0) {
        globfree(&g);
        fail<UsageError>("{}: the pattern matches no files", input);
      }
      for (std::size_t i = 0; i < g.gl_pathc; ++i) add_path(g.gl_pathv[i], true);
      globfree(&g);
      continue;
    }
    fail<UsageError>("{}: no such file or folder", input);
  }
  out.files.assign(files.begin(), files.end());
  return out;
}

}  // namespace nanochat
