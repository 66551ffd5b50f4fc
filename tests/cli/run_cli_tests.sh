#!/usr/bin/env bash
# CLI tests: run the real nanochat binary as a user would, with good and bad input.
# Usage: run_cli_tests.sh path/to/nanochat
set -uo pipefail
bin="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export NANOCHAT_CACHE="$work/cache"
unset NANOCHAT_ISA NANOCHAT_ARG_THREADS
source "$(dirname "$0")/lib.sh"

# --version: version, commit, compiler, build type.
out=$("$bin" --version) && [[ "$out" =~ ^nanochat\ [0-9]+\.[0-9]+\.[0-9]+\ \(commit\ .+,\ .+,\ .+\ build ]] && ok || bad "--version: '$out'"

# system-info, text and JSON.
out=$("$bin" system-info 2>"$work/err") && grep -q "isa features:" <<<"$out" &&
  grep -q "kernel paths:" <<<"$out" && grep -q "cores:" <<<"$out" && ok || bad "system-info: $out"
"$bin" system-info --json >"$work/si.json" 2>"$work/err" &&
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["isa_in_use"] and d["plans"] and d["cpu"]["physical_cores"] >= 1' \
    "$work/si.json" && ok || bad "system-info --json"
NANOCHAT_ISA=scalar "$bin" system-info | grep -q "in use: scalar" && ok || bad "NANOCHAT_ISA=scalar not honoured"
NANOCHAT_NO_GFNI=1 NANOCHAT_NO_AVX_VNNI=1 "$bin" system-info |
  grep -q "unpacks with shift and mask.*multiplies with vpmaddubsw" && ok ||
  bad "NANOCHAT_NO_GFNI / NANOCHAT_NO_AVX_VNNI not reported by system-info"

# benchmark kernels: JSON is clean (parses; progress only on stderr) and complete.
"$bin" benchmark kernels --shape 64x512 --shape 33x300 -t 1,2 -b 1,5 --reps 2 --no-bandwidth -o json \
  >"$work/bench.json" 2>"$work/bench.err" || bad "benchmark json exit"
python3 - "$work/bench.json" <<'PY' && ok || bad "benchmark json content"
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["results"]
isas = {r["isa"] for r in rows}
assert "scalar" in isas, isas
assert len(rows) == 2 * 2 * 2 * len(isas), len(rows)
for r in rows:
    assert r["median_us"] > 0 and r["gops"] > 0 and r["weight_bytes"] > 0, r
    if r["isa"] != "scalar":
        assert r["speedup_vs_scalar"] > 0, r
    if r["batch"] > 1:
        assert r["token_cost_vs_b1"] > 0, r
PY
grep -q "benchmark: \[" "$work/bench.err" && ok || bad "benchmark progress missing on stderr"

"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 2 --no-bandwidth -o csv >"$work/bench.csv" 2>/dev/null &&
  head -1 "$work/bench.csv" | grep -q "^kernel,isa,rows,cols" && ok || bad "benchmark csv"
"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 2 --no-bandwidth --isa scalar 2>/dev/null |
  grep -q "| scalar | 64x512 |" && ok || bad "benchmark md table"
ls "$NANOCHAT_CACHE"/autotune-*.json >/dev/null 2>&1 && ok || bad "autotune cache not written"

# A corrupt autotune cache: a warning, then the run succeeds and rewrites it.
for f in "$NANOCHAT_CACHE"/autotune-*.json; do printf '{garbage' >"$f"; done
"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o json >"$work/b2.json" 2>"$work/b2.err" &&
  grep -q "unusable" "$work/b2.err" && python3 -c 'import json,glob,sys; [json.load(open(f)) for f in glob.glob(sys.argv[1])]' "$NANOCHAT_CACHE/autotune-*.json" &&
  ok || bad "corrupt cache handling: $(cat "$work/b2.err")"

# JSON logs: every log line is one JSON object, even for messages with quotes.
for f in "$NANOCHAT_CACHE"/autotune-*.json; do printf '{"quoted": "garbage' >"$f"; done
"$bin" --log-format json -vv benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o json \
  >/dev/null 2>"$work/log.err" &&
  python3 - "$work/log.err" <<'PY' && ok || bad "json logs: $(cat "$work/log.err")"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
assert any(json.loads(l)["level"] == "warning" for l in lines), lines
for l in lines:
    d = json.loads(l)
    assert set(d) == {"time", "level", "msg"}, d
PY

# A GGUF without a tokenizer, for the tokenize error below.
printf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$work/sample-notok.gguf"

# info on a vocab-only file: text and JSON.
vocab="$(dirname "$0")/../data/shared/testdata/tokenizers/ggml-vocab-gpt-2.gguf"
out=$("$bin" info -m "$vocab") && grep -q "tokenizer:      gpt2 (pre: gpt-2), 50257 tokens, 50000 merges" <<<"$out" &&
  grep -q "architecture:   gpt2" <<<"$out" && ok || bad "info text: $out"
"$bin" info --json -m "$vocab" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["tokenizer"]["tokens"] == 50257 and d["architecture"] == "gpt2"' && ok || bad "info --json"

# tokenize: the ids of every .inp/.out pair, through the real binary.
vdir="$(dirname "$0")/../data/shared/testdata/tokenizers"
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

# tokenizer train: files, folders with --ext, globs; the result tokenizes and round-trips.
tdir="$(dirname "$0")/../data/shared/testdata/text"
mkdir -p "$work/src/pkg" "$work/src/.git"
printf 'fn main() {\n    println!("hello");\n}\n' >"$work/src/pkg/a.rs"
printf 'def f():\n    return 1\n' >"$work/src/pkg/b.py"
printf 'secret' >"$work/src/.git/config"
printf 'bin\0ary' >"$work/src/pkg/c.rs"
"$bin" tokenizer train "$tdir/tiny-shakespeare.txt" "$work/src" "$tdir/*.md" --ext rs -o "$work/tok.gguf" --vocab-size 1024 \
  2>"$work/train.err" && grep -q "read 3 files" "$work/train.err" && grep -q "skipped 1 binary, 1 by extension" "$work/train.err" &&
  ok || bad "tokenizer train: $(cat "$work/train.err")"
text='First Citizen: Before we proceed any further, hear me speak.'
"$bin" tokenize -m "$work/tok.gguf" -p "$text" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert "".join(d["pieces"]) == sys.argv[1], d
assert len(d["ids"]) < 25, d' "$text" && ok || bad "trained tokenizer"

# A tiny random model with the tokenizer trained above; generate with it.
"$bin" model random --tokenizer "$work/tok.gguf" -o "$work/model.gguf" --streams 2 --sub-norms 2>/dev/null && ok || bad "model random"
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

# chat without a terminal answers one turn and exits; -sys as llama.cpp spells it.
out=$(echo "First Citizen" | "$bin" chat -m "$work/model.gguf" -n 6 --temp 0 -sys "Speak." --autotune off 2>"$work/chat.err") &&
  [[ -n "$out" ]] && ok || bad "chat one turn: $(cat "$work/chat.err")"
echo "hi" | "$bin" chat -m "$work/model.gguf" -n 4 --chat-template chatml --autotune off >/dev/null 2>&1 && ok || bad "chat --chat-template"

# perplexity and benchmark model on the tiny model.
"$bin" perplexity -m "$work/model.gguf" -f "$tdir/tinystories-sample.txt" -c 64 --json --autotune off |
  python3 -c '
import json, sys
d = json.load(sys.stdin)
assert 1 < d["perplexity"] < 5000 and d["bits_per_byte"] > 0, d
assert d["scored_tokens"] == d["chunks"] * 31, d' && ok || bad "perplexity --json"
"$bin" benchmark model -m "$work/model.gguf" -p 16 -n 8 -t 1 -r 2 -o json --autotune off 2>/dev/null |
  python3 -c '
import json, sys
d = json.load(sys.stdin)
tests = {r["test"] for r in d["results"]}
assert tests == {"pp16", "tg8"}, tests
assert all(r["tokens_per_second"] > 0 for r in d["results"]) and d["bytes_per_token"] > 0' && ok || bad "benchmark model"
# -p 0 skips prompt processing (llama-bench's convention); -o csv: a header and one line per test.
"$bin" benchmark model -m "$work/model.gguf" -p 0 -n 8 -t 1,2 -r 2 -o csv --autotune off 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.DictReader(sys.stdin))
assert [(r["test"], r["threads"]) for r in rows] == [("tg8", "1"), ("tg8", "2")], rows
assert all(float(r["avg_ts"]) > 0 for r in rows)' && ok || bad "benchmark model -p 0 -o csv"
"$bin" model random --vocab 300 -o "$work/shape.gguf" --layers 1 --output-type q8_0 --embedding f16 2>/dev/null &&
  "$bin" generate -m "$work/shape.gguf" -p "ab" -n 3 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "model random --vocab"
# llama.cpp's architectures: bitnet (tied F16 embedding, .scale tensors) and ternary llama.
"$bin" model random --arch bitnet --tokenizer "$work/tok.gguf" --embedding f16 --scale-tensors -o "$work/bitnet.gguf" 2>/dev/null &&
  [[ "$("$bin" info -m "$work/bitnet.gguf" 2>/dev/null)" == *"architecture:   bitnet"* ]] &&
  "$bin" generate -m "$work/bitnet.gguf" -p "def" -n 4 --temp 0 --autotune off >/dev/null 2>&1 && ok || bad "bitnet model"
"$bin" model random --arch llama --tokenizer "$work/tok.gguf" --embedding bf16 --output-type f16 --ternary tq1_0 -o "$work/llama.gguf" 2>/dev/null &&
  "$bin" generate -m "$work/llama.gguf" -p "def" -n 4 --temp 0 --autotune off --json 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["token_count"] == 4, d' && ok || bad "llama model"

# Training: the tiny config on a slice of nanochat's own sources, a few steps.
repo="$(cd "$(dirname "$0")/../.." && pwd)"
train_args=(-c "$repo/configs/tiny.toml" --set "data.inputs=[\"$repo/src/train\", \"$repo/src/model\"]"
  --set data.max_bytes=60000 --set data.tokenizer_vocab_size=300 --set training.total_steps=6
  --set training.warmup_steps=1 --set training.checkpoint_interval=2 --set training.eval_interval=3
  --autotune off)
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\"" >"$work/train.out" 2>"$work/train.err" &&
  python3 - "$work/train.out" <<'PY' && ok || bad "train: $(tail -3 "$work/train.err")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "loss" in l]
assert [l["step"] for l in steps] == list(range(1, 7)), steps
for l in steps:
    assert set(l) >= {"step", "loss", "ce_loss", "entropy", "lr", "grad_norm", "tokens_per_sec", "elapsed"}, l
assert any("val_bpb" in l for l in lines), lines
assert lines[-1]["done"] is True and lines[-1]["peak_memory_mib"] > 0
PY
[[ -s "$work/run/model.gguf" && $(ls "$work/run"/step-*.nckpt | wc -l) -eq 2 ]] && ok || bad "train: model.gguf or keep_last"
"$bin" generate -m "$work/run/model.gguf" -p "int" -n 5 --autotune off >/dev/null 2>&1 && ok || bad "train: generate on the exported model"
"$bin" export "$work/run" -o "$work/exported.gguf" 2>/dev/null && cmp -s "$work/exported.gguf" "$work/run/model.gguf" && ok ||
  bad "export: differs from the model train wrote"
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\"" --resume >"$work/again.out" 2>"$work/again.err" &&
  grep -q "already finished at step 6" "$work/again.err" && [[ ! -s "$work/again.out" ]] && ok ||
  bad "train: resuming a finished run: $(cat "$work/again.err")"
expect_fail "train: existing run" "already holds checkpoints.*--resume" "$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\""
expect_fail "train: resume nothing" "--resume: .* holds no checkpoint" "$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/none\"" --resume
expect_fail "export: mHC as llama" "--arch llama: the model has mHC-lite streams" "$bin" export "$work/run" -o "$work/x.gguf" --arch llama
cp "$(ls "$work/run"/step-*.nckpt | tail -1)" "$work/cut.nckpt" && truncate -s 5000 "$work/cut.nckpt"
expect_fail "export: truncated checkpoint" "cut.nckpt: checksum mismatch" "$bin" export "$work/cut.nckpt" -o "$work/x.gguf"

# Ctrl-C (SIGINT) finishes the step, writes a checkpoint and exits 130; --resume continues.
"$bin" train "${train_args[@]}" --set training.total_steps=5000 --set training.checkpoint_interval=0 \
  --set "output.checkpoint_dir=\"$work/int\"" >/dev/null 2>"$work/int.err" &
pid=$!
for _ in $(seq 300); do
  [[ $(wc -l 2>/dev/null <"$work/int/train.jsonl" || echo 0) -ge 3 ]] && break
  sleep 0.1
done
kill -INT "$pid"
wait "$pid"
rc=$?
last=$(ls "$work/int"/step-*.nckpt 2>/dev/null | tail -1)
[[ $rc -eq 130 && -n "$last" ]] && grep -q "interrupted) with a checkpoint; continue with --resume" "$work/int.err" && ok ||
  bad "train: Ctrl-C gave rc=$rc, checkpoint '$last': $(tail -2 "$work/int.err")"

# kill -9 at arbitrary moments never leaves a bad newest checkpoint, and --resume finishes the run.
kill_args=("${train_args[@]}" --set training.total_steps=80 --set training.checkpoint_interval=1
  --set "output.checkpoint_dir=\"$work/killed\"")
"$bin" train "${kill_args[@]}" >/dev/null 2>&1 &
pid=$!
killed_ok=1
# Wait for the first checkpoint (data preparation comes first; slow on a loaded machine).
for _ in $(seq 300); do
  ls "$work/killed"/step-*.nckpt >/dev/null 2>&1 && break
  sleep 0.1
done
for delay in 0.3 0.4 0.6; do
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  "$bin" export "$work/killed" -o "$work/k.gguf" 2>"$work/k.err" || { killed_ok=0; cat "$work/k.err" >&2; }
  "$bin" train "${kill_args[@]}" --resume >/dev/null 2>&1 &
  pid=$!
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"$bin" train "${kill_args[@]}" --resume >/dev/null 2>"$work/k.err" &&
  [[ $killed_ok -eq 1 && -s "$work/killed/model.gguf" ]] && ok || bad "kill -9 / resume: $(tail -2 "$work/k.err")"
ls "$work/killed" | grep -q '\.tmp' && bad "kill -9 left temporary files behind" || ok

# Bad input: one clear line, non-zero exit.
expect_fail "unknown ISA env" "NANOCHAT_ISA=avx9000: unknown instruction set" env NANOCHAT_ISA=avx9000 "$bin" benchmark kernels --shape 8x8
expect_fail "unknown --isa" "--isa=neon: unknown instruction set" "$bin" benchmark kernels --isa neon --shape 8x8
if ! grep -q avx512vnni <<<"$("$bin" system-info)"; then
  expect_fail "unavailable ISA" "lacks AVX-512" env NANOCHAT_ISA=avx512 "$bin" benchmark kernels --shape 8x8
fi
expect_fail "malformed shape" "--shape 12x: expected ROWSxCOLS" "$bin" benchmark kernels --shape 12x
expect_fail "zero shape" "--shape 0x5" "$bin" benchmark kernels --shape 0x5
expect_fail "zero threads" "-t 0: '0' is not a whole number" "$bin" benchmark kernels -t 0 --shape 8x8
expect_fail "bad thread list" "-t 1,x" "$bin" benchmark kernels -t 1,x --shape 8x8
expect_fail "bad output" "-o yaml: unknown output format" "$bin" benchmark kernels -o yaml --shape 8x8
expect_fail "bad autotune" "--autotune: 'sometimes'" "$bin" benchmark kernels --autotune sometimes --shape 8x8 --no-bandwidth
expect_fail "bad log format" "--log-format: 'xml'" "$bin" --log-format xml system-info
expect_fail "unknown flag" "--frobnicate" "$bin" benchmark kernels --frobnicate
expect_fail "no subcommand" "no command given" "$bin"
expect_fail "info: missing file" "/nonexistent/x.gguf: cannot open" "$bin" info -m /nonexistent/x.gguf
expect_fail "info: no -m" "--model is required" "$bin" info
printf '[model]\ndim = 256\nn_layers = 1\nn_heads = 2\nffn_dim = 256\n[training]\nlr = 1\n[data]\ninputs = ["x"]\n' >"$work/bad.toml"
expect_fail "train: unknown key" "bad.toml:7: unknown key 'training.lr'; \[training\] takes adamw_lr" "$bin" train -c "$work/bad.toml"
printf '[model]\ndim = 256\nn_layers = 1\nn_heads = 2\nffn_dim = 256\n[data]\ninputs = ["x"]\n' >"$work/good.toml"
expect_fail "train: bad --set" "--set training.batch_size=0: training.batch_size must be 1 or more" "$bin" train -c "$work/good.toml" --set training.batch_size=0
expect_fail "train: missing config" "/nonexistent.toml: cannot open" "$bin" train -c /nonexistent.toml
expect_fail "train: missing tokenizer" "data.tokenizer /nonexistent.gguf: no such file" "$bin" train -c "$work/good.toml" --set 'data.tokenizer="/nonexistent.gguf"' --set "output.checkpoint_dir=\"$work/tk\""
expect_fail "train: unwritable checkpoint_dir" "/proc/nanochat-run: cannot create directory" "$bin" train -c "$work/good.toml" --set 'output.checkpoint_dir="/proc/nanochat-run"'
expect_fail "export: not a checkpoint" "not a nanochat checkpoint" "$bin" export "$work/bitnet.gguf" -o "$work/x.gguf"
expect_fail "train: warmup" "training.warmup_steps 50 must be below training.total_steps 10" "$bin" train -c "$work/good.toml" --set training.total_steps=10 --set training.warmup_steps=50
expect_fail "train: missing input" "/nonexistent/corpus: no such file or folder" "$bin" tokenizer train /nonexistent/corpus -o "$work/x.gguf"
expect_fail "train: empty glob" "matches no files" "$bin" tokenizer train "$work/*.nothing" -o "$work/x.gguf"
expect_fail "train: tiny vocab" "--vocab-size 10: must be at least 259" "$bin" tokenizer train "$work/code.py" -o "$work/x.gguf" --vocab-size 10
expect_fail "train: no output" "--output is required" "$bin" tokenizer train "$work/code.py"
expect_fail "generate: empty prompt" "the prompt is empty" "$bin" generate -m "$work/model.gguf" -p "" --autotune off
expect_fail "generate: context too small" "-c 3: the prompt has 7 tokens" "$bin" generate -m "$work/model.gguf" -p "a b c d e f g" -c 3 --autotune off
expect_fail "generate: bad top-p" "--top-p 2" "$bin" generate -m "$work/model.gguf" -p x --top-p 2 --autotune off
expect_fail "generate: bad -n" "-n -5" "$bin" generate -m "$work/model.gguf" -p x -n -5 --autotune off
expect_fail "generate: not a model" "architecture 'gpt2' is not one nanochat runs" "$bin" generate -m "$vdir/ggml-vocab-gpt-2.gguf" -p x --autotune off
expect_fail "generate: missing model" "/nonexistent/m.gguf: cannot open" "$bin" generate -m /nonexistent/m.gguf -p x
expect_fail "model random: bad dim" "--dim 100 and --ffn 512 must be multiples of 256" "$bin" model random --tokenizer "$work/tok.gguf" -o "$work/x.gguf" --dim 100
expect_fail "perplexity: short text" "fewer than one chunk" "$bin" perplexity -m "$work/model.gguf" -f "$work/code.py" -c 128 --autotune off
expect_fail "model random: output type" "--output-type q4: use f32, f16, bf16 or q8_0" "$bin" model random --vocab 300 -o "$work/x.gguf" --output-type q4
expect_fail "model random: bad arch" "--arch gpt2: use nanochat, bitnet" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch gpt2
expect_fail "model random: bitnet head" "--arch bitnet uses the embedding as output head" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch bitnet --output-type q8_0
expect_fail "model random: llama streams" "--streams 2: only --arch nanochat" "$bin" model random --vocab 300 -o "$work/x.gguf" --arch llama --streams 2
expect_fail "model random: tokenizer or vocab" "either --tokenizer FILE or --vocab N" "$bin" model random -o "$work/x.gguf"
expect_usage "benchmark model: both 0" "-p 0 -n 0: 0 or more each" "$bin" benchmark model -m "$work/model.gguf" -p 0 -n 0 --autotune off
expect_fail "benchmark model: too long" "exceed the model's context" "$bin" benchmark model -m "$work/model.gguf" -p 250 -n 10 --autotune off
expect_fail "chat: empty stdin" "stdin is empty" sh -c "printf '' | '$bin' chat -m '$work/model.gguf' --autotune off"
expect_fail "chat: unknown template" "chat template 'jinja9' is unknown" sh -c "echo hi | '$bin' chat -m '$work/model.gguf' --chat-template jinja9 --autotune off"
[[ "$(echo -n "Hello world" | "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" --ids --no-bos)" == "15496 995" ]] && ok || bad "tokenize reads stdin"
expect_fail "tokenize: -p and -f" "-p and -f both given" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -p x -f "$work/code.py"
expect_fail "tokenize: -f folder" "is a folder; pass a file" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -f "$work"
expect_fail "tokenize: missing -f file" "/nonexistent/in.txt: cannot open" "$bin" tokenize -m "$vdir/ggml-vocab-gpt-2.gguf" -f /nonexistent/in.txt
expect_fail "tokenize: no tokenizer" "sample-notok.gguf: has no tokenizer" "$bin" tokenize -m "$work/sample-notok.gguf" -p x
printf 'GGUF\x03\x00\x00\x00' >"$work/trunc.gguf"
expect_fail "info: truncated" "trunc.gguf: tensor count needs 8 bytes" "$bin" info -m "$work/trunc.gguf"
printf 'not a gguf file at all' >"$work/text.gguf"
expect_fail "info: not gguf" "text.gguf: bad magic" "$bin" info -m "$work/text.gguf"
expect_usage "env thread var" "NANOCHAT_ARG_THREADS=zero: not a valid value for --threads" env NANOCHAT_ARG_THREADS=zero "$bin" benchmark kernels --shape 8x8

# Usage errors: exit 2 and one line naming the command, flag or variable.
m="$work/model.gguf"
expect_usage "unknown command" "unknown command 'frob'; commands are .*generate" "$bin" frob
expect_usage "no command" "no command given; commands are" "$bin"
expect_usage "unknown flag" "not expected: --frob; see 'nanochat generate --help'" "$bin" generate --frob
expect_usage "bad number" "n-predict = abc" "$bin" generate -m "$m" -n abc -p x
expect_usage "env var named" "^nanochat: NANOCHAT_ARG_CTX_SIZE=abc: not a valid value for --ctx-size" env NANOCHAT_ARG_CTX_SIZE=abc "$bin" generate -m "$m" -p x
expect_usage "generate -n -2" "^nanochat: -n -2: use -1" "$bin" generate -m "$m" -n -2 -p x
expect_usage "chat -n -2" "^nanochat: -n -2: use -1" sh -c "echo hi | '$bin' chat -m '$m' -n -2"
expect_usage "chat -c -3" "^nanochat: -c -3: must be 0" sh -c "echo hi | '$bin' chat -m '$m' -c -3"
expect_usage "negative temp" "^nanochat: --temp -1: must be 0 \\(greedy\\) or a positive number" "$bin" generate -m "$m" --temp -1 -p x
expect_usage "-t list" "^nanochat: -t 1,2: this command takes one thread count" "$bin" generate -m "$m" -t 1,2 -p x
expect_usage "huge -c" "^nanochat: -c 72057594037927936: its KV cache would need .* GiB, more than this machine's" "$bin" generate -m "$m" -c 72057594037927936 -p x --autotune off

# Warnings as llama.cpp gives them: a context past the trained one, a binary file as the prompt.
"$bin" generate -m "$m" -p "To be" -n 2 -c 1000 --autotune off >/dev/null 2>"$work/warn.err" &&
  grep -q "warning: -c 1000: the model was trained for 256 tokens" "$work/warn.err" && ok || bad "context warning: $(cat "$work/warn.err")"
printf 'ab\0cd' >"$work/binary.txt"
"$bin" generate -m "$m" -f "$work/binary.txt" -n 2 --autotune off >/dev/null 2>"$work/warn.err" &&
  grep -q "binary.txt: holds NUL bytes and looks binary" "$work/warn.err" && ok || bad "binary warning: $(cat "$work/warn.err")"

# Ctrl-C during generate: the text so far, the timings and the seed; exit 130.
# (A long context and --ignore-eos: it runs until interrupted.)
"$bin" model random --vocab 512 -o "$work/long.gguf" --ctx 65536 --ffn 256 --layers 1 2>/dev/null
"$bin" generate -m "$work/long.gguf" -p "ab" -n -1 --ignore-eos --temp 1 -s 5 --autotune off >"$work/gint.out" 2>"$work/gint.err" &
gpid=$!
for _ in $(seq 300); do  # until it streams text (the handler is in place), at most 30 s
  [[ -s "$work/gint.out" ]] && break
  sleep 0.1
done
kill -INT $gpid
wait $gpid
rc=$?
[[ $rc -eq 130 ]] && grep -q "finish:      cancelled (seed 5)" "$work/gint.err" && grep -q "^eval:" "$work/gint.err" &&
  ok || bad "generate Ctrl-C: exit $rc, stderr $(cat "$work/gint.err")"

echo "cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
