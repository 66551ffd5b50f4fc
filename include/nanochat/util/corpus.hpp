// Collecting input files for training: files, folders (walked recursively, hidden entries
// skipped) and glob patterns, optionally filtered by extension; binary files are skipped.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace nanochat {

struct CorpusFiles {
  std::vector<std::filesystem::path> files;  // sorted, unique
  std::size_t skipped_binary = 0;
  std::size_t skipped_extension = 0;
};

// `extensions`: e.g. {".py", ".rs"}, applied to files found by walking folders; empty = all. Throws
// UsageError naming an input that does not exist or a glob that matches nothing.
CorpusFiles collect_corpus(const std::vector<std::string>& inputs,
                           const std::vector<std::string>& extensions);

}  // namespace nanochat
