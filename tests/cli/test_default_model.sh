#!/usr/bin/env bash
# The default model: shipped in models/, copied beside the binary's tree by CMake, named by
# --version and system-info, used by generate and chat without -m; the error of a binary without
# it; NANOCHAT_ARG_MODEL.
# Usage: test_default_model.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

default_model="$(dirname "$bin")/../share/nanochat/models/nanochat-rust.gguf"
[[ -f "$default_model" ]] && cmp -s "$default_model" "$repo/models/nanochat-rust.gguf" && ok ||
  bad "the build tree has no copy of models/nanochat-rust.gguf at $default_model"
"$bin" --version | grep -q "^default model: .*share/nanochat/models/nanochat-rust.gguf" && ok ||
  bad "--version does not name the default model: $("$bin" --version)"
"$bin" system-info --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["default_model"].endswith("nanochat-rust.gguf"), d["default_model"]' &&
  ok || bad "system-info --json: default_model"
out=$("$bin" generate -p "fn fibonacci(n: u64) -> u64 {" -n 16 --temp 0 --autotune off 2>"$work/gen.err") &&
  [[ -n "$out" ]] && grep -q "nanochat-rust.gguf\|tokens per second\|eval" "$work/gen.err" && ok ||
  bad "generate without -m: $(cat "$work/gen.err")"
out=$(echo "Write a Rust function that returns the larger of two numbers." |
  "$bin" chat -n 24 --temp 0 --autotune off 2>"$work/chat.err") && [[ -n "$out" ]] && ok ||
  bad "chat without -m: $(cat "$work/chat.err")"
# A binary without the share/ tree beside it (and no install) says what to do.
mkdir -p "$work/bin"
cp "$bin" "$work/bin/nanochat"
if [[ ! -e /usr/local/share/nanochat/models/nanochat-rust.gguf ]]; then
  expect_fail "generate: no default model" "-m: no model given and the default model nanochat-rust.gguf is not installed" \
    "$work/bin/nanochat" generate -p x
fi
# NANOCHAT_ARG_MODEL and -m win over the default.
make_code_model
NANOCHAT_ARG_MODEL="$work/tiny.gguf" "$bin" generate -p "fn" -n 4 --json --autotune off 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert 1 <= d["token_count"] <= 4 and max(d["tokens"]) < 400, d' &&
  ok || bad "NANOCHAT_ARG_MODEL"  # the tiny model's 400-token vocabulary, not the default's 8192

finish
