// Files: whole-file reads and atomic writes (temp file in the same directory, fsync, rename,
// fsync of the directory), so a crash leaves either the old file or the new one, never a mix.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace nanochat {

// Reads a whole file; throws IoError naming the path.
std::string read_file(const std::filesystem::path& path);

// Replaces `path` atomically with `contents`, creating parent directories. Throws IoError.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// nanochat's cache directory: $NANOCHAT_CACHE, else $XDG_CACHE_HOME/nanochat, else
// ~/.cache/nanochat. Not created here.
std::filesystem::path cache_dir();

}  // namespace nanochat
