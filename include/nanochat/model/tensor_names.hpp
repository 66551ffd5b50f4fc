// GGUF tensor names, llama.cpp's spelling, in one place: model loading, export, the trainer's
// parameters (and so checkpoints), random models and tests all name tensors through these.
//
//   token_embd.weight, output_norm.weight, output.weight     the model's ends
//   blk.N.<part>.weight                                      block N's tensors, parts below
//   blk.N.<part>.scale                                       a ternary layer's optional scale
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nanochat::model::tensors {

inline constexpr char kEmbedding[] = "token_embd.weight";
inline constexpr char kOutputNorm[] = "output_norm.weight";
inline constexpr char kOutput[] = "output.weight";

// Parts of a block.
inline constexpr char kAttnNorm[] = "attn_norm";
inline constexpr char kAttnMhc[] = "attn_mhc";
inline constexpr char kAttnQ[] = "attn_q";
inline constexpr char kAttnK[] = "attn_k";
inline constexpr char kAttnV[] = "attn_v";
inline constexpr char kAttnSubNorm[] = "attn_sub_norm";
inline constexpr char kAttnOutput[] = "attn_output";
inline constexpr char kFfnNorm[] = "ffn_norm";
inline constexpr char kFfnMhc[] = "ffn_mhc";
inline constexpr char kFfnGate[] = "ffn_gate";
inline constexpr char kFfnUp[] = "ffn_up";
inline constexpr char kFfnSubNorm[] = "ffn_sub_norm";
inline constexpr char kFfnDown[] = "ffn_down";

// "blk.<layer>.<part>.weight"
std::string block(std::int64_t layer, std::string_view part);
// The part of a block tensor's name ("attn_q" for "blk.3.attn_q.weight"); empty for any other.
std::string_view part_of(std::string_view name);
// Whether `name` is a ternary linear layer: a block's Q, K, V, attention output, gate, up or
// down projection, or the output head.
bool is_ternary_layer(std::string_view name);
// The name of the one-value scale tensor that may accompany the ternary layer `weight`
// ("blk.3.attn_q.scale" for "blk.3.attn_q.weight").
std::string scale_of(std::string_view weight);

}  // namespace nanochat::model::tensors
