#!/usr/bin/env bash
# nanochat eval code: the harness verified by HumanEval-X's references; a model run with pass@1/2
# and JSON lines; no temporary folders left; bad input.
# Usage: test_eval_code.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_code_model

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

finish
