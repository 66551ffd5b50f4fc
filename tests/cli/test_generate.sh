#!/usr/bin/env bash
# nanochat generate on a tiny random model: the same seed at 1 and 2 threads, greedy, stdin,
# --stop, llama.cpp's warnings, bad input.
# Usage: test_generate.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

gen() { "$bin" generate -m "$work/model.gguf" --autotune off "$@"; }
a=$(gen -p "First Citizen:" -n 12 -s 5 --json -t 1) && b=$(gen -p "First Citizen:" -n 12 -s 5 --json -t 2) &&
  python3 - "$a" "$b" <<'PY' && ok || bad "generate: same seed, different threads: $a / $b"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["tokens"] == b["tokens"] and a["text"] == b["text"], (a, b)
assert a["token_count"] <= 12 and a["timings"]["prompt_tokens"] > 0
assert a["finish_reason"] in ("length", "eos")
PY
out=$(gen -p "To be" -n 6 --temp 0 2>"$work/gen.err") && grep -q "eval:" "$work/gen.err" && grep -q "prompt eval:" "$work/gen.err" &&
  [[ "$out" == "$(gen -p "To be" -n 6 --temp 0 2>/dev/null)" ]] && ok || bad "generate greedy: $out $(cat "$work/gen.err")"
echo "First Citizen:" | gen -n 4 -s 1 --json >/dev/null && ok || bad "generate from stdin"
full=$(gen -p "First Citizen:" -n 12 -s 5 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
stop="${full:3:3}"
if [[ -n "${stop// /}" ]]; then
  cut=$(gen -p "First Citizen:" -n 12 -s 5 --json --stop "$stop" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["finish_reason"], d["text"])')
  [[ "$cut" == "stop ${full:0:3}" ]] && ok || bad "generate --stop '$stop': '$cut' from '$full'"
fi

# Warnings as llama.cpp gives them: a context past the trained one, a binary file as the prompt.
m="$work/model.gguf"
"$bin" generate -m "$m" -p "To be" -n 2 -c 1000 --autotune off >/dev/null 2>"$work/warn.err" &&
  grep -q "warning: -c 1000: the model was trained for 256 tokens" "$work/warn.err" && ok || bad "context warning: $(cat "$work/warn.err")"
printf 'ab\0cd' >"$work/binary.txt"
"$bin" generate -m "$m" -f "$work/binary.txt" -n 2 --autotune off >/dev/null 2>"$work/warn.err" &&
  grep -q "binary.txt: holds NUL bytes and looks binary" "$work/warn.err" && ok || bad "binary warning: $(cat "$work/warn.err")"

# Bad input: one clear line, non-zero exit.
expect_fail "generate: empty prompt" "the prompt is empty" "$bin" generate -m "$m" -p "" --autotune off
expect_fail "generate: empty stdin" "^nanochat: stdin is empty: pipe the text, or pass -p TEXT or -f FILE$" sh -c '"$1" generate -m "$2" --autotune off </dev/null' _ "$bin" "$m"
expect_fail "generate: context too small" "-c 3: the prompt has 7 tokens" "$bin" generate -m "$m" -p "a b c d e f g" -c 3 --autotune off
expect_fail "generate: bad top-p" "--top-p 2" "$bin" generate -m "$m" -p x --top-p 2 --autotune off
expect_fail "generate: bad -n" "-n -5" "$bin" generate -m "$m" -p x -n -5 --autotune off
expect_fail "generate: not a model" "architecture 'gpt2' is not one nanochat runs" "$bin" generate -m "$vdir/ggml-vocab-gpt-2.gguf" -p x --autotune off
expect_fail "generate: missing model" "/nonexistent/m.gguf: cannot open" "$bin" generate -m /nonexistent/m.gguf -p x

finish
