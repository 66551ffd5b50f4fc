#!/usr/bin/env bash
# nanochat info: what a GGUF file holds, text and JSON; missing, truncated and foreign files.
# Usage: test_info.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# A vocab-only file.
vocab="$vdir/ggml-vocab-gpt-2.gguf"
out=$("$bin" info -m "$vocab") && grep -q "tokenizer:      gpt2 (pre: gpt-2), 50257 tokens, 50000 merges" <<<"$out" &&
  grep -q "architecture:   gpt2" <<<"$out" && ok || bad "info text: $out"
"$bin" info --json -m "$vocab" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["tokenizer"]["tokens"] == 50257 and d["architecture"] == "gpt2"' && ok || bad "info --json"

expect_fail "info: missing file" "/nonexistent/x.gguf: cannot open" "$bin" info -m /nonexistent/x.gguf
expect_fail "info: no -m" "--model is required" "$bin" info
printf 'GGUF\x03\x00\x00\x00' >"$work/trunc.gguf"
expect_fail "info: truncated" "trunc.gguf: tensor count needs 8 bytes" "$bin" info -m "$work/trunc.gguf"
printf 'not a gguf file at all' >"$work/text.gguf"
expect_fail "info: not gguf" "text.gguf: bad magic 0x[0-9a-f]+; GGUF files start with the bytes .GGUF. \\(at byte 0\\)" "$bin" info -m "$work/text.gguf"

finish
