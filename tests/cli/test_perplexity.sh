#!/usr/bin/env bash
# nanochat perplexity on a tiny random model: llama.cpp's chunks, JSON; a text too short.
# Usage: test_perplexity.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

"$bin" perplexity -m "$work/model.gguf" -f "$tdir/tinystories-sample.txt" -c 64 --json --autotune off |
  python3 -c '
import json, sys
d = json.load(sys.stdin)
assert 1 < d["perplexity"] < 5000 and d["bits_per_byte"] > 0, d
assert d["scored_tokens"] == d["chunks"] * 31, d' && ok || bad "perplexity --json"
printf 'def main():\n    return 42\n' >"$work/code.py"
expect_fail "perplexity: short text" "fewer than one chunk" "$bin" perplexity -m "$work/model.gguf" -f "$work/code.py" -c 128 --autotune off

finish
