#!/usr/bin/env bash
# nanochat benchmark model on a tiny random model: pp and tg tests, -p 0, JSON and CSV; bad input.
# Usage: test_benchmark_model.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

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

expect_usage "benchmark model: both 0" "-p 0 -n 0: 0 or more each" "$bin" benchmark model -m "$work/model.gguf" -p 0 -n 0 --autotune off
expect_fail "benchmark model: too long" "exceed the model's context" "$bin" benchmark model -m "$work/model.gguf" -p 250 -n 10 --autotune off

finish
