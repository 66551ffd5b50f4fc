#!/usr/bin/env bash
# Ctrl-C during nanochat generate: the text so far, the timings and the seed; exit 130.
# Usage: test_generate_interrupt.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# A long context and --ignore-eos: it runs until interrupted.
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

finish
