#!/usr/bin/env bash
# --log-format json: every log line is one JSON object, even for messages with quotes.
# Usage: test_logging.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# A cache file with a quote in it makes the warning to log.
"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o json >/dev/null 2>&1
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
# -v says what loading does and what it took; without -v, nothing of it.
"$bin" generate -p "fn" -n 1 -v >/dev/null 2>"$work/v.err"
grep -q "info: loading .*: mapping the file, validating .*repacking" "$work/v.err" &&
  grep -q "info: loaded .* in [0-9]* ms: .* layers, .* MB of weights read per token, .* kernels on [0-9]* threads" "$work/v.err" &&
  ok || bad "-v loading lines: $(cat "$work/v.err")"
"$bin" generate -p "fn" -n 1 >/dev/null 2>"$work/q.err"
grep -q "info: load" "$work/q.err" && bad "loading lines without -v: $(cat "$work/q.err")" || ok
expect_fail "bad log format" "--log-format: 'xml'" "$bin" --log-format xml system-info

finish
