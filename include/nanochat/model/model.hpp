// The transformer nanochat runs — its own architecture and llama.cpp's bitnet and ternary llama
// (see config.hpp for what each fixes): BitNet b1.58 layers (RMSNorm pre-norm, optional sub-norms
// before attn_output and ffn_down, RoPE, grouped-query attention, SwiGLU or squared-ReLU gated
// FFN), ternary linear layers with per-token int8 activations run by the kernel dispatch, mHC-lite
// residual streams (1, 2 or 4), tied or ternary output head.
//
// GGUF layout (general.architecture = "nanochat"; shapes as ggml writes them, row length first):
//   token_embd.weight [dim, vocab] F32/F16/BF16/Q8_0
//   blk.N.attn_norm.weight [dim] F32            blk.N.ffn_norm.weight [dim] F32
//   blk.N.attn_q/k/v/output.weight  ternary     blk.N.ffn_gate/up/down.weight ternary
//   blk.N.attn_sub_norm.weight [dim]            blk.N.ffn_sub_norm.weight [ffn]   (sub_norms)
//   blk.N.attn_mhc.weight, blk.N.ffn_mhc.weight F32 [2n + logits]  (mhc.n_streams > 1)
//   output_norm.weight [dim] F32, output.weight [dim, vocab] ternary, Q8_0 or float (unless tied)
//   blk.N.<linear>.scale [1] (optional, bitnet): multiplies that layer's output
// Ternary tensors are TQ2_0, TQ1_0 or I2_S with one scale per row (per tensor in practice).
// A float head (F32/F16/BF16 output.weight, or the embedding when tied) is quantized to Q8_0 at
// load and runs through the Q8_0 kernels.
//
// Thread-safety: forward() uses the KernelContext's pool; one session at a time per context.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "nanochat/gguf/types.hpp"
#include "nanochat/kernels/dispatch.hpp"
#include "nanochat/model/config.hpp"
#include "nanochat/model/tokenizer.hpp"

namespace nanochat::gguf {
class GgufFile;
}

namespace nanochat::model {

// What Model::forward works in, kept from call to call so that decoding one token allocates
// nothing: the buffers only grow, to the largest batch of tokens seen.
struct ForwardBuffers {
  std::vector<float> x, u, h, q, k, v, att, gate, up, out, qkv, gateup, final_h;
  std::vector<float> rope_cos, rope_sin, segment_cos, segment_sin;
  std::vector<std::int64_t> row_position, row_segment, run_start;
  kernels::PackedActivations acts;
};

// Keys and values of every layer for the positions seen so far, and the forward pass's working
// buffers: one KvCache per session.
class KvCache {
 public:
  // `capacity` tokens, 0 for the model's context_length; checked by resolve_capacity().
  KvCache(const ModelConfig& config, std::int64_t capacity);
  // The capacity a cache for `requested` tokens gets (0: the model's context_length), checked
  // before anything is multiplied: at most ModelConfig::kMaxContextLength tokens and no more
  // memory than the machine has. A bad request throws InvalidArgument for "context" (the CLI's
  // -c); a context_length from the file that does not fit throws FormatError naming the file
  // and key. Both messages give the memory the cache would need.
  static std::int64_t resolve_capacity(const ModelConfig& config, std::int64_t requested);
  // Bytes a cache of `capacity` tokens takes, in double so that no flag or file value can wrap.
  static double bytes_for(const ModelConfig& config, std::int64_t capacity);
  // The machine's physical memory in bytes, the most any cache may take.
  static double memory_limit();
  std::int64_t capacity() const { return capacity_; }
  std::int64_t length() const { return length_; }
  void clear() { length_ = 0; }
  // [capacity][kv_dim] for one layer
  float* keys(std::int64_t layer) { return k_.get() + layer * capacity_ * kv_dim_; }
  float* values(std::int64_t layer) { return v_.get() + layer * capacity_ * kv_dim_; }
  void set_length(std::int64_t n) { length_ = n; }
  ForwardBuffers& buffers() { return buffers_; }

 private:
  std::int64_t capacity_, kv_dim_, length_ = 0;
  std::unique_ptr<float[]> k_, v_;
  ForwardBuffers buffers_;
};

// Called as loading goes: `done` of `total` tensor bytes read and repacked.
using LoadProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

class Model {
 public:
  // Loads weights from `file` (which must stay open: nothing is copied that need not be),
  // repacking ternary tensors for `kernels`. Throws FormatError naming the file and tensor.
  // With `weight_cache` (a file path; weight_cache.hpp), the repacked matrices are mapped from
  // that file when it was made from this very file for these layouts on this CPU, and else
  // written there after repacking; a damaged or stale cache file is named in a warning and
  // replaced, never an error.
  static std::unique_ptr<Model> load(const gguf::GgufFile& file, kernels::KernelContext& kernels,
                                     const LoadProgress& progress = {},
                                     const std::filesystem::path& weight_cache = {});
  ~Model();

  const ModelConfig& config() const;
  // Bytes one decoded token reads: every ternary matrix plus, for a tied head, the embedding.
  std::size_t bytes_per_token() const;

  // Runs `tokens` at positions cache.length() ... through the model, appends their keys and
  // values to `cache`, and writes logits: [vocab] for the last token, or [tokens][vocab] when
  // `all_logits`. Throws Error when the cache is too small or a token is out of range.
  void forward(std::span<const TokenId> tokens, KvCache& cache, std::vector<float>& logits,
               bool all_logits = false);

  // Several sequences in one pass (continuous batching): each segment's tokens run at its own
  // cache's positions, all of them through each matrix together, so the weights are read once
  // for the whole batch. Logits: for each segment in order, its last token's row (or all its
  // rows when `all_logits`). Every row is computed as it would be alone: the results equal
  // separate forward() calls. The caches must be distinct.
  struct Segment {
    std::span<const TokenId> tokens;
    KvCache* cache = nullptr;
    bool all_logits = false;
  };
  void forward_batch(std::span<const Segment> segments, ForwardBuffers& buffers,
                     std::vector<float>& logits);

  struct Weights;

 private:
  Model(std::unique_ptr<Weights> w, kernels::KernelContext& kernels);
  std::unique_ptr<Weights> w_;
  kernels::KernelContext& kernels_;
};

// Float values of an F32 / F16 / BF16 / Q8_0 tensor. Throws FormatError for other types.
std::vector<float> dequantize_tensor(const gguf::GgufFile& file, const std::string& name);
// out.size() values of a tensor of ggml type id `type` (F32, F16, BF16 or Q8_0) from element
// `first` on; for Q8_0, `first` and out.size() are multiples of 32.
void dequantize_rows(std::uint32_t type, std::span<const std::uint8_t> data, std::size_t first,
                     std::span<float> out);
// A whole ternary tensor in TQ2_0 or TQ1_0, every block with the scale `scale` (as fp16).
std::vector<std::uint8_t> encode_ternary(gguf::TensorType type, std::span<const std::int8_t> trits,
                                         float scale);

}  // namespace nanochat::model
