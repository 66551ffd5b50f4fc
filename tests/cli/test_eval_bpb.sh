#!/usr/bin/env bash
# nanochat eval bpb: concatenated and per file, xz -9e beside it (checked against the xz
# command), equal to perplexity on the concatenation; bad input.
# Usage: test_eval_bpb.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_code_model

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

expect_fail "eval bpb: missing path" "/nonexistent/held" "$bin" eval bpb -m "$work/tiny.gguf" -f /nonexistent/held
expect_fail "eval bpb: no files" "-f: no text files with extension .py" "$bin" eval bpb -m "$work/tiny.gguf" -f "$work/held" --ext .py

finish
