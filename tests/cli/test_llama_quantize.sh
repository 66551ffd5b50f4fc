#!/usr/bin/env bash
# Files llama.cpp's llama-quantize writes with its default settings (K-quant embeddings and
# heads beside TQ2_0 layers; tests/data/llama-quantize/README.md): nanochat loads them, generates,
# and scores a text as llama.cpp's llama-perplexity does (mean log-likelihood within 0.1%).
# Usage: test_llama_quantize.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
data="$repo/tests/data/llama-quantize"

check() {  # file, llama.cpp's ln(PPL)
  local file="$data/$1" want="$2"
  "$bin" info -m "$file" >"$work/info.txt" && grep -qE "(Q6_K|Q4_K)" "$work/info.txt" && ok || bad "$1: info lists the K-quant tensors"
  "$bin" generate -m "$file" -p "fn main() {" -n 8 --temp 0 --autotune off >"$work/out.txt" 2>"$work/err.txt" &&
    ok || bad "$1: generate ($(cat "$work/err.txt"))"
  "$bin" perplexity -m "$file" -f "$data/text.txt" -c 128 --json --autotune off 2>/dev/null |
    python3 -c '
import json, math, sys
d = json.load(sys.stdin)
got, want = math.log(d["perplexity"]), float(sys.argv[1])
assert d["chunks"] == 16, d
assert abs(got - want) <= 1e-3 * want, (got, want)' "$want" && ok || bad "$1: perplexity against llama.cpp's"
}

check bitnet-tq2.gguf 121.4319
check llama-tq2.gguf 9.5352

finish
