#!/usr/bin/env bash
# nanochat benchmark kernels: md, JSON and CSV output, the autotune cache it writes, bad input.
# Usage: test_benchmark.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# JSON is clean (parses; progress only on stderr) and complete.
"$bin" benchmark kernels --shape 64x512 --shape 33x300 -t 1,2 -b 1,5 --reps 2 --no-bandwidth -o json \
  >"$work/bench.json" 2>"$work/bench.err" || bad "benchmark json exit"
python3 - "$work/bench.json" <<'PY' && ok || bad "benchmark json content"
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["results"]
isas = {r["isa"] for r in rows}
assert "scalar" in isas, isas
# Each ISA in every weight layout it has here (AVX-512 with VBMI: the 2-bit and base3 layouts).
kernels = {(r["isa"], r["layout"]) for r in rows}
assert len(rows) == 2 * 2 * 2 * len(kernels), len(rows)
for r in rows:
    assert r["median_us"] > 0 and r["gops"] > 0 and r["weight_bytes"] > 0, r
    if r["isa"] != "scalar":
        assert r["speedup_vs_scalar"] > 0, r
    if r["batch"] > 1:
        assert r["token_cost_vs_b1"] > 0, r
PY
grep -q "benchmark: \[" "$work/bench.err" && ok || bad "benchmark progress missing on stderr"
# The first tuning in a fresh cache is announced as a note, and every stderr line is whole: a
# progress line or a log line, never one broken into by the other.
grep -q "^note: autotune: timing the kernels" "$work/bench.err" && ok || bad "autotune note: $(cat "$work/bench.err")"
bad_lines=$(grep -cvE '^(note: |benchmark: \[[0-9]+/[0-9]+\] [^ ]+( base3)? [0-9]+x[0-9]+ b[0-9]+ t[0-9]+: (packing the weights\.\.\.|[0-9.]+ (us|ms|s) per call \(tile [0-9]+x[0-9]+( [a-z]+)?\))$)' "$work/bench.err")
[[ $bad_lines -eq 0 ]] && ok || bad "benchmark stderr has $bad_lines unexpected lines: $(cat "$work/bench.err")"

"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 2 --no-bandwidth -o csv >"$work/bench.csv" 2>/dev/null &&
  head -1 "$work/bench.csv" | grep -q "^kernel,isa,rows,cols" && ok || bad "benchmark csv"
"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 2 --no-bandwidth --isa scalar 2>/dev/null |
  grep -q "| scalar | 64x512 |" && ok || bad "benchmark md table"
ls "$NANOCHAT_CACHE"/autotune-*.json >/dev/null 2>&1 && ok || bad "autotune cache not written"

# Bad input: one clear line, non-zero exit.
expect_fail "unknown ISA env" "NANOCHAT_ISA=avx9000: unknown instruction set" env NANOCHAT_ISA=avx9000 "$bin" benchmark kernels --shape 8x8
expect_fail "unknown --isa" "--isa=neon: unknown instruction set" "$bin" benchmark kernels --isa neon --shape 8x8
if ! grep -q avx512vnni <<<"$("$bin" system-info)"; then
  expect_fail "unavailable ISA" "lacks AVX-512" env NANOCHAT_ISA=avx512 "$bin" benchmark kernels --shape 8x8
fi
expect_fail "unknown layout" "NANOCHAT_LAYOUT=base4: unknown weight layout" env NANOCHAT_LAYOUT=base4 "$bin" benchmark kernels --shape 8x8
expect_fail "layout the ISA lacks" "NANOCHAT_LAYOUT=base3: no kernel this run can use multiplies that layout" env NANOCHAT_LAYOUT=base3 "$bin" benchmark kernels --isa scalar --shape 8x8
if grep -q "1.6-bit base3" <<<"$("$bin" system-info)"; then
  expect_fail "a listed ISA without the layout" "--isa scalar: that path has no base3 layout" env NANOCHAT_LAYOUT=base3 "$bin" benchmark kernels --isa scalar,avx512 --shape 8x8
  NANOCHAT_LAYOUT=base3 "$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o csv 2>/dev/null >"$work/b3.csv" &&
    [[ $(tail -n +2 "$work/b3.csv" | wc -l) -eq 1 ]] && tail -1 "$work/b3.csv" | grep -q ",base3$" && ok || bad "NANOCHAT_LAYOUT=base3 benchmark: $(cat "$work/b3.csv")"
fi
expect_fail "malformed shape" "--shape 12x: expected ROWSxCOLS" "$bin" benchmark kernels --shape 12x
expect_fail "zero shape" "--shape 0x5" "$bin" benchmark kernels --shape 0x5
expect_fail "zero threads" "-t 0: '0' is not a whole number" "$bin" benchmark kernels -t 0 --shape 8x8
expect_fail "bad thread list" "-t 1,x" "$bin" benchmark kernels -t 1,x --shape 8x8
expect_fail "bad output" "-o yaml: unknown output format" "$bin" benchmark kernels -o yaml --shape 8x8
expect_fail "bad autotune" "--autotune: 'sometimes'" "$bin" benchmark kernels --autotune sometimes --shape 8x8 --no-bandwidth
expect_usage "env thread var" "NANOCHAT_ARG_THREADS=zero: not a valid value for --threads" env NANOCHAT_ARG_THREADS=zero "$bin" benchmark kernels --shape 8x8

finish
