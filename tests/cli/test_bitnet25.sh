#!/usr/bin/env bash
# bitnet.cpp's BitNet b1.58 2B4T layout (architecture bitnet-25, I2_S layers, F16 embedding and
# head): the tiny models in tests/data/bitnet25/ through info, generate, tokenize and perplexity;
# files its generator breaks (a truncated I2_S tensor, one without its scale, a wrong
# architecture) give one line naming the file and the tensor or key.
# Usage: test_bitnet25.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

ddir="$repo/tests/data/bitnet25"
gen=(/usr/bin/python3 "$ddir/make_bitnet25.py")
model="$ddir/bitnet25-tiny.gguf"
tied="$ddir/bitnet25-tiny-tied.gguf"

# The committed files are what the generator writes.
"${gen[@]}" "$work/again.gguf" && cmp -s "$work/again.gguf" "$model" && ok ||
  bad "bitnet25-tiny.gguf differs from make_bitnet25.py's output"
"${gen[@]}" "$work/again-tied.gguf" --tied && cmp -s "$work/again-tied.gguf" "$tied" && ok ||
  bad "bitnet25-tiny-tied.gguf differs from make_bitnet25.py --tied"

out=$("$bin" info -m "$model" 2>&1) && grep -q "architecture:   bitnet-25" <<<"$out" &&
  grep -q "I2_S" <<<"$out" && ok || bad "info: $out"
"$bin" info --json -m "$model" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["architecture"] == "bitnet-25", d["architecture"]
' && ok || bad "info --json"

for m in "$model" "$tied"; do
  name=$(basename "$m")
  out=$("$bin" generate -m "$m" -p "the cat" -n 8 --temp 0 --autotune off 2>"$work/err") &&
    [[ -n "$out" ]] && ok || bad "generate $name: $(cat "$work/err")"
  again=$("$bin" generate -m "$m" -p "the cat" -n 8 --temp 0 --autotune off -t 1 2>/dev/null) &&
    [[ "$again" == "$out" ]] && ok || bad "generate $name: 1 thread '$again' vs 2 threads '$out'"
done

# The byte-level BPE vocabulary with no tokenizer.ggml.pre (as 2B4T's file): BOS first.
ids=$("$bin" tokenize -m "$model" -p "the cat" --ids) && [[ "$(awk '{print $1}' <<<"$ids")" == 296 ]] &&
  ok || bad "tokenize: '$ids'"

printf 'the quick brown fox jumps over the lazy dog. the cat sat on the mat.\n%.0s' {1..20} >"$work/text.txt"
"$bin" perplexity -m "$model" -f "$work/text.txt" -c 64 --json --autotune off 2>/dev/null |
  python3 -c 'import json, math, sys; d = json.load(sys.stdin); assert math.isfinite(d["perplexity"]) and d["perplexity"] > 1' &&
  ok || bad "perplexity"

# Bad input, each a file the generator writes with one thing wrong.
"${gen[@]}" "$work/trunc.gguf" --truncate-in blk.1.attn_q.weight
expect_fail "truncated I2_S tensor" "trunc.gguf: tensor 'blk.1.attn_q.weight' .* runs past the end" \
  "$bin" info -m "$work/trunc.gguf"
expect_fail "generate: truncated I2_S tensor" "trunc.gguf: tensor 'blk.1.attn_q.weight'" \
  "$bin" generate -m "$work/trunc.gguf" -p x -n 1 --autotune off
"${gen[@]}" "$work/noscale.gguf" --no-scale blk.0.ffn_up.weight
expect_fail "I2_S tensor without its scale" \
  "noscale.gguf: I2_S tensor 'blk.0.ffn_up.weight' has no room for its scale" \
  "$bin" generate -m "$work/noscale.gguf" -p x -n 1 --autotune off
# The last tensor of a file cut just before its scale.
head -c -32 "$model" >"$work/cut.gguf"
expect_fail "last tensor cut" "cut.gguf: .*tensor 'output_norm.weight'" "$bin" info -m "$work/cut.gguf"
"${gen[@]}" "$work/arch.gguf" --arch bitnet-b1.58
expect_fail "keys under another architecture" \
  "arch.gguf: missing bitnet-b1.58.embedding_length — the file has 'bitnet-25.embedding_length'" \
  "$bin" generate -m "$work/arch.gguf" -p x -n 1 --autotune off
"${gen[@]}" "$work/arch26.gguf" --arch bitnet-26
expect_fail "unknown architecture" "arch26.gguf: architecture 'bitnet-26' is not one nanochat runs \(nanochat, bitnet, bitnet-b1.58, bitnet-25, llama\)" \
  "$bin" generate -m "$work/arch26.gguf" -p x -n 1 --autotune off

finish
