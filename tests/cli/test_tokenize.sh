#!/usr/bin/env bash
# nanochat tokenize: llama.cpp's ids for every vocabulary, -f, --json, --special, stdin, bad input.
# Usage: test_tokenize.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# The ids of every .inp/.out pair, through the real binary.
python3 - "$bin" "$vdir" <<'PY' && ok || bad "tokenize --ids vs .out files"
import subprocess, sys
bin, vdir = sys.argv[1:3]
for v in ["gpt-2", "starcoder", "deepseek-coder", "refact", "llama-spm", "phi-3"]:
    path = f"{vdir}/ggml-vocab-{v}.gguf"
    inputs = open(path + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")[:-1]
    outputs = open(path + ".out").read().split("\n")
    for i in (0, 1, 2, 7, len(inputs) - 1):
        r = subprocess.run([bin, "tokenize", "-m", path, "-p", inputs[i], "--ids", "--no-bos"],
                           capture_output=True, text=True, check=True)
        assert r.stdout.split() == outputs[i].split(), (v, i, r.stdout[:200])
PY
printf 'def main():\n    return 42\n' >"$work/code.py"
"$bin" tokenize -m "$vdir/ggml-vocab-llama-spm.gguf" -f "$work/code.py" --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ids"][0] == 1 and d["count"] == len(d["ids"]) == len(d["pieces"])' &&
  ok || bad "tokenize -f --json"
"$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -p 'a<|endoftext|>b' --special --ids | grep -qx "64 50256 65" &&
  ok || bad "tokenize --special"
[[ "$(echo -n "Hello world" | "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" --ids --no-bos)" == "15496 995" ]] && ok || bad "tokenize reads stdin"

# A GGUF without a tokenizer.
printf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$work/sample-notok.gguf"
expect_fail "tokenize: -p and -f" "-p and -f both given" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -p x -f "$work/code.py"
expect_fail "tokenize: -f folder" "is a folder; pass a file" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -f "$work"
expect_fail "tokenize: missing -f file" "/nonexistent/in.txt: cannot open" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -f /nonexistent/in.txt
expect_fail "tokenize: no tokenizer" "sample-notok.gguf: has no tokenizer" "$bin" tokenize -m "$work/sample-notok.gguf" -p x

finish
