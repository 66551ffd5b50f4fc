#!/usr/bin/env bash
# nanochat model random: every architecture, and each file runs; bad input.
# Usage: test_model_random.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

make_source_tree
train_tiny_tokenizer 2>/dev/null || bad "tokenizer train"
"$bin" model random --tokenizer "$work/tok.gguf" -o "$work/model.gguf" --streams 2 --sub-norms 2>/dev/null &&
  "$bin" generate -m "$work/model.gguf" -p "To be" -n 3 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "model random"
"$bin" model random --vocab 300 -o "$work/shape.gguf" --layers 1 --output-type q8_0 --embedding f16 2>/dev/null &&
  "$bin" generate -m "$work/shape.gguf" -p "ab" -n 3 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "model random --vocab"
# llama.cpp's architectures: bitnet (tied F16 embedding, .scale tensors) and ternary llama.
"$bin" model random --arch bitnet --tokenizer "$work/tok.gguf" --embedding f16 --scale-tensors -o "$work/bitnet.gguf" 2>/dev/null &&
  [[ "$("$bin" info -m "$work/bitnet.gguf" 2>/dev/null)" == *"architecture:   bitnet"* ]] &&
  "$bin" generate -m "$work/bitnet.gguf" -p "def" -n 4 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "bitnet model"
"$bin" model random --arch llama --tokenizer "$work/tok.gguf" --embedding bf16 --output-type f16 --ternary tq1_0 -o "$work/llama.gguf" 2>/dev/null &&
  "$bin" generate -m "$work/llama.gguf" -p "def" -n 4 --temp 0 --autotune off --json 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["token_count"] == 4, d' && ok || bad "llama model"
# K-quant embedding and head, as llama-quantize writes them (the head runs on the K-quant kernels).
"$bin" model random --arch llama --vocab 300 --embedding q4_k --output-type q6_k -o "$work/kq.gguf" 2>/dev/null &&
  "$bin" info -m "$work/kq.gguf" 2>/dev/null | grep -qE "output.weight +Q6_K" &&
  "$bin" generate -m "$work/kq.gguf" -p "ab" -n 3 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "model random --embedding q4_k --output-type q6_k"
# The other block types with head kernels: the tensors are written in them and the model runs.
for pair in "q5_k q4_0" "q4_1 q5_0" "q5_0 q5_1" "q8_0 q5_k" "q4_0 q4_1"; do
  read -r emb out <<<"$pair"
  "$bin" model random --arch llama --vocab 300 --embedding "$emb" --output-type "$out" -o "$work/b.gguf" 2>/dev/null &&
    "$bin" info -m "$work/b.gguf" 2>/dev/null | grep -qE "output.weight +${out^^}" &&
    "$bin" info -m "$work/b.gguf" 2>/dev/null | grep -qE "token_embd.weight +${emb^^}" &&
    "$bin" generate -m "$work/b.gguf" -p "ab" -n 3 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "model random --embedding $emb --output-type $out"
done

expect_fail "model random: bad dim" "--dim 100 and --ffn 512 must be multiples of 256" "$bin" model random --tokenizer "$work/tok.gguf" -o "$work/x.gguf" --dim 100
expect_fail "model random: output type" "--output-type q4: use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k" "$bin" model random --vocab 300 -o "$work/x.gguf" --output-type q4
expect_fail "model random: bad arch" "--arch gpt2: use nanochat, bitnet" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch gpt2
expect_fail "model random: bitnet head" "--arch bitnet uses the embedding as output head" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch bitnet --output-type q8_0
expect_fail "model random: llama streams" "--streams 2: only --arch nanochat" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch llama --streams 2
expect_fail "model random: tokenizer or vocab" "either --tokenizer FILE or --vocab N" "$bin" model random -o "$work/x.gguf"
# A model file is not a checkpoint.
expect_fail "export: not a checkpoint" "not a nanochat checkpoint" "$bin" export "$work/bitnet.gguf" -o "$work/x.gguf"

finish
