// Bits per byte of held-out text, with xz -9e on the same bytes beside it: the model is a
// compressor, xz the baseline every model must beat.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "nanochat/engine/scoring.hpp"

namespace nanochat::eval {

// Size in bytes of `data` compressed as `xz -9e` does (liblzma, preset 9 | extreme, CRC64
// check: the same .xz stream the command writes).
std::int64_t xz_size(std::string_view data);

struct BpbFile {
  std::filesystem::path path;
  std::int64_t bytes = 0;
  std::int64_t xz_bytes = 0;
  engine::Score score;  // the whole file (engine::score_document)
};

struct BpbReport {
  std::int64_t context = 0;
  std::vector<BpbFile> files;
  // All files concatenated in order, scored with llama.cpp's chunking (engine::score_chunks),
  // as `nanochat perplexity` scores one text.
  engine::Score concatenated;
  std::int64_t concatenated_bytes = 0;
  std::int64_t concatenated_xz_bytes = 0;
  double seconds = 0;

  // Sums over the per-file scores and xz sizes.
  engine::Score per_file_total() const;
  std::int64_t per_file_xz_bytes() const;
  std::int64_t per_file_bytes() const;
};

// Scores `files` (in the given order) at `context` tokens. `progress(done, total)` after each
// file. Throws UsageError for an unreadable file or a concatenation shorter than one chunk.
BpbReport evaluate_bpb(engine::LoadedModel& model, const std::vector<std::filesystem::path>& files,
                       std::int64_t context,
                       const std::function<void(std::size_t, std::size_t)>& progress = {});

}  // namespace nanochat::eval
