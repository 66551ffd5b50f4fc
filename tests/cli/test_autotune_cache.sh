#!/usr/bin/env bash
# The autotuner's cache file: a corrupt one gives a warning, then the run succeeds and rewrites it.
# Usage: test_autotune_cache.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o json >/dev/null 2>"$work/b1.err" &&
  ls "$NANOCHAT_CACHE"/autotune-*.json >/dev/null 2>&1 && ok || bad "autotune cache not written: $(cat "$work/b1.err")"
for f in "$NANOCHAT_CACHE"/autotune-*.json; do printf '{garbage' >"$f"; done
"$bin" benchmark kernels --shape 64x512 -t 1 -b 1 --reps 1 --no-bandwidth -o json >"$work/b2.json" 2>"$work/b2.err" &&
  grep -q "unusable" "$work/b2.err" && python3 -c 'import json,glob,sys; [json.load(open(f)) for f in glob.glob(sys.argv[1])]' "$NANOCHAT_CACHE/autotune-*.json" &&
  ok || bad "corrupt cache handling: $(cat "$work/b2.err")"

finish
