#!/usr/bin/env bash
# CLI tests of the default model, `nanochat eval` and fine-tuning (`train --init` on chat data):
# the real binary, as a user runs it, with good and bad input.
# Usage: run_model_tests.sh path/to/nanochat
set -uo pipefail
bin="$1"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export NANOCHAT_CACHE="$work/cache"
unset NANOCHAT_ISA NANOCHAT_ARG_THREADS NANOCHAT_ARG_MODEL
source "$(dirname "$0")/lib.sh"

# --- The default model: shipped in models/, copied beside the binary's tree by CMake. ---------
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
printf 'fn main() {}\n' >"$work/a.rs"
"$bin" tokenizer train "$repo/src/eval" "$repo/src/train" -o "$work/tok.gguf" --vocab-size 400 2>/dev/null && ok || bad "tokenizer train"
"$bin" model random --tokenizer "$work/tok.gguf" -o "$work/tiny.gguf" --ctx 512 2>/dev/null && ok || bad "model random"
NANOCHAT_ARG_MODEL="$work/tiny.gguf" "$bin" generate -p "fn" -n 4 --json --autotune off 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert 1 <= d["token_count"] <= 4 and max(d["tokens"]) < 400, d' &&
  ok || bad "NANOCHAT_ARG_MODEL"  # the tiny model's 400-token vocabulary, not the default's 8192

# --- eval bpb: concatenated and per file, xz -9e beside it (checked against the xz command). -----
mkdir -p "$work/held"
cp "$repo/src/eval/bpb.cpp" "$work/held/a.rs"
cp "$repo/src/eval/code.cpp" "$work/held/b.rs"
printf 'not rust' >"$work/held/c.txt"
"$bin" eval bpb -m "$work/tiny.gguf" -f "$work/held" -c 64 --json --autotune off >"$work/bpb.json" 2>"$work/bpb.err" &&
  python3 - "$work/bpb.json" "$work/held" <<'PY' && ok || bad "eval bpb --json: $(cat "$work/bpb.err")"
import json, subprocess, sys
d = json.load(open(sys.argv[1]))
held = sys.argv[2]
files = [f["path"] for f in d["files"]]
assert [p.rsplit("/", 1)[1] for p in files] == ["a.rs", "b.rs"], files  # --ext .rs, sorted
data = b"".join(open(p, "rb").read() for p in files)
xz = len(subprocess.run(["xz", "-9e", "-c"], input=data, capture_output=True, check=True).stdout)
assert abs(d["concatenated"]["xz_bits_per_byte"] - 8 * xz / len(data)) < 1e-9, (d, xz)
each = sum(len(subprocess.run(["xz", "-9e", "-c", p], capture_output=True, check=True).stdout) for p in files)
assert abs(d["per_file"]["xz_bits_per_byte"] - 8 * each / len(data)) < 1e-9, (d, each)
c = d["concatenated"]
assert d["context"] == 64 and c["chunks"] >= 1 and 0 < c["bits_per_byte"] < 16, c
assert c["scored_tokens"] == c["chunks"] * 31, c  # llama.cpp's chunks: the second half scored
assert d["per_file"]["scored_tokens"] > c["scored_tokens"], d  # every token of every file
PY
out=$("$bin" eval bpb -m "$work/tiny.gguf" -f "$work/held" -c 64 --per-file --autotune off 2>/dev/null) &&
  grep -q "concatenated (llama.cpp chunks)" <<<"$out" && grep -q "a.rs" <<<"$out" && ok || bad "eval bpb text: $out"
# The perplexity command scores a single text the same way as the concatenation.
cat "$work/held/a.rs" "$work/held/b.rs" >"$work/ab.rs"
ppl=$("$bin" perplexity -m "$work/tiny.gguf" -f "$work/ab.rs" -c 64 --json --autotune off 2>/dev/null)
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.load(open(sys.argv[2]))["concatenated"]; assert abs(a["bits_per_byte"]-b["bits_per_byte"]) < 1e-9, (a, b)' \
  "$ppl" "$work/bpb.json" && ok || bad "eval bpb vs perplexity"

# --- eval code: the harness verified by HumanEval-X's references; a model run; JSON lines. ------
"$bin" eval code --set humaneval-x --reference --limit 4 --json --results "$work/ref.jsonl" >"$work/ref.json" 2>/dev/null &&
  python3 - "$work/ref.json" "$work/ref.jsonl" <<'PY' && ok || bad "eval code --reference"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["problems"] == 4 and d["pass_at"]["pass@1"] == 1.0, d
lines = [json.loads(l) for l in open(sys.argv[2])]
assert [l["id"] for l in lines] == ["Rust/0", "Rust/1", "Rust/2", "Rust/3"], lines
assert all(l["runs"][0]["status"] == "pass" for l in lines)
PY
"$bin" eval code -m "$work/tiny.gguf" --set humaneval-rs --limit 2 -n 2 -k 1,2 --max-tokens 8 --json --autotune off \
  --results "$work/he.jsonl" >"$work/he.json" 2>/dev/null &&
  python3 - "$work/he.json" "$work/he.jsonl" <<'PY' && ok || bad "eval code with a model"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["problems"] == 2 and d["samples"] == 2 and set(d["pass_at"]) == {"pass@1", "pass@2"}, d
assert sum(d["statuses"].values()) == 4, d
lines = [json.loads(l) for l in open(sys.argv[2])]
assert len(lines) == 2 and all(len(l["runs"]) == 2 for l in lines), lines
PY
[[ -z "$(ls /tmp | grep '^nanochat-eval-')" ]] && ok || bad "eval code left temporary folders in /tmp"
printf '{"name": "x", "prompt": "fn x() {\\n", "test": ""}\n[1, 2]\n' >"$work/suite.jsonl"
expect_fail "eval code: bad suite line" "suite.jsonl:2: not a JSON object" "$bin" eval code --set "$work/suite.jsonl" -m "$work/tiny.gguf"
expect_fail "eval code: unknown suite" "--set humaneval-py: neither a suite nanochat ships" "$bin" eval code --set humaneval-py
expect_fail "eval code: missing rustc" "--rustc: /nonexistent/rustc does not run" "$bin" eval code --set humaneval-rs --rustc /nonexistent/rustc
expect_fail "eval code: k above n" "-k 10: pass@10 needs at least 10 samples" "$bin" eval code --set humaneval-rs -k 10
expect_fail "eval code: reference without references" "--reference: suite humaneval-rs has no reference" "$bin" eval code --set humaneval-rs --reference
expect_fail "eval bpb: missing path" "/nonexistent/held" "$bin" eval bpb -m "$work/tiny.gguf" -f /nonexistent/held
expect_fail "eval bpb: no files" "-f: no text files with extension .py" "$bin" eval bpb -m "$work/tiny.gguf" -f "$work/held" --ext .py

# --- Fine-tuning: a tiny base run, then --init on chat data. ---------------------------------
"$bin" train -c "$repo/configs/tiny.toml" --set "data.inputs=[\"$repo/src/train\"]" --set training.total_steps=6 \
  --set "output.checkpoint_dir=\"$work/base\"" --json --autotune off >/dev/null 2>&1 && ok || bad "base run"
python3 - "$work/chat.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(40):
        f.write(json.dumps({"messages": [
            {"role": "user", "content": f"Write a Rust function that adds {i}."},
            {"role": "assistant", "content": f"fn add{i}(x: i32) -> i32 {{\n    x + {i}\n}}"}]}) + "\n")
PY
chat_args=(-c "$repo/configs/tiny.toml" --set data.format=chat --set "data.inputs=[\"$work/chat.jsonl\"]"
  --set 'data.include=[".jsonl"]' --set training.total_steps=4 --set training.warmup_steps=1 --autotune off)
"$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/chat\"" --init "$work/base/model.gguf" --json \
  >"$work/chat.log" 2>"$work/chat.err" && grep -q "init: weights and tokenizer from" "$work/chat.err" &&
  grep -q "assistant targets" "$work/chat.err" && ok || bad "train --init on chat data: $(cat "$work/chat.err")"
"$bin" info -m "$work/chat/model.gguf" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); t=d["chat_template"]; assert "Assistant:" in t, t' &&
  ok || bad "the chat model carries its template"
echo "Write a Rust function that adds 3." | "$bin" chat -m "$work/chat/model.gguf" -n 8 --autotune off >/dev/null 2>"$work/c.err" &&
  ok || bad "chat with the tuned model: $(cat "$work/c.err")"
expect_fail "train --init: missing file" "--init /nonexistent/base.gguf: no such file" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c2\"" --init /nonexistent/base.gguf
"$bin" model random --tokenizer "$work/tok.gguf" -o "$work/llama.gguf" --arch llama 2>/dev/null
expect_fail "train --init: another architecture" "--init .*llama.gguf: architecture 'llama'" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c3\"" --init "$work/llama.gguf"
expect_fail "train --init: another shape" "model.dim is 256 in the --init model but 512" \
  "$bin" train "${chat_args[@]}" --set model.dim=512 --set "output.checkpoint_dir=\"$work/c4\"" --init "$work/base/model.gguf"
printf '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": 5}\n' >"$work/bad.jsonl"
expect_fail "train: bad chat record" "bad.jsonl:2: no \"messages\" array" \
  "$bin" train "${chat_args[@]}" --set "data.inputs=[\"$work/bad.jsonl\"]" --set "output.checkpoint_dir=\"$work/c5\"" --init "$work/base/model.gguf"
expect_fail "train: chat without a model" "data.format = \"chat\" fine-tunes a model" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c6\""

echo "model cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
