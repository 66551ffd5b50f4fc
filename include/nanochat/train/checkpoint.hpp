// Training checkpoints: one file per save, `<checkpoint_dir>/step-<8 digits>.nckpt`.
//
// Layout (little-endian): "NCCKPT\0\0", u32 format version, u32 0, u64 header length, the header
// (JSON: step, elapsed time, the run's config as TOML, data fingerprint, and a table of tensors
// with offsets), the tensors (fp32: weights, then optimizer state), the tokenizer as a GGUF blob,
// and a trailing u64 FNV-1a hash of everything before it. Written atomically (temporary file,
// fsync, rename), so a crash or `kill -9` leaves the previous checkpoints intact; the last
// `keep_last` are kept. A truncated or altered file fails its hash check with a clear error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nanochat::train {

inline constexpr std::uint32_t kCheckpointVersion = 1;

struct CheckpointTensor {
  std::string name;
  std::vector<float> data;
};

struct Checkpoint {
  std::int64_t step = 0;                  // optimizer steps completed
  double elapsed_s = 0;                   // training time so far
  std::string config_toml;                // the run's effective configuration
  std::string fingerprint;                // the data's
  std::vector<CheckpointTensor> tensors;  // weights ("token_embd.weight", ...) and state (".m")
  std::vector<std::uint8_t> tokenizer_gguf;

  const CheckpointTensor* find(const std::string& name) const;
};

// Writes `dir/step-<step>.nckpt` atomically and deletes older ones beyond keep_last. Returns the
// path.
std::filesystem::path save_checkpoint(const std::filesystem::path& dir, const Checkpoint& c,
                                      std::int64_t keep_last);

// Reads and verifies a checkpoint; throws FormatError naming the file and the problem.
Checkpoint load_checkpoint(const std::filesystem::path& path);

// Checkpoint files in `dir`, newest (highest step) first.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);

}  // namespace nanochat::train
