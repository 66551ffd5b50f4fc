#!/usr/bin/env bash
# nanochat on x86-64 CPUs without AVX-512 and without AVX2, emulated by qemu-user (Debian's
# qemu-user; tools/setup.sh installs it): Haswell (AVX2, FMA, F16C) and Nehalem (SSE4.2 only).
# On each, the binary must choose the path that CPU has, the given test binaries (kernels
# against the scalar reference, the model, sessions) must pass, and a greedy `generate` with the
# default model must give the same tokens as the native run.
#   qemu_check.sh NANOCHAT TEST_BINARY...
set -uo pipefail
command -v qemu-x86_64 >/dev/null || {
  echo "FAIL: qemu-x86_64 not found; install it with tools/setup.sh (Debian's qemu-user)" >&2
  exit 1
}
source "$(dirname "$0")/lib.sh" "$1"  # $bin; $work and NANOCHAT_CACHE of its own
shift

tokens() {  # the greedy tokens of the default model, as one line
  "$@" generate -p "fn fibonacci(n: u64) -> u64 {" -n 24 --temp 0 --ignore-eos --autotune off \
    -t 1 --json 2>"$work/gen.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])'
}
native=$(tokens "$bin")
[[ -n "$native" ]] || bad "native generate: $(cat "$work/gen.err")"

for pair in Haswell:avx2 Nehalem:scalar; do
  cpu=${pair%%:*}
  want=${pair##*:}
  q=(qemu-x86_64 -cpu "$cpu")
  in_use=$("${q[@]}" "$bin" system-info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["isa_in_use"])')
  [[ "$in_use" == "$want" ]] && ok || bad "$cpu: kernel path in use is '$in_use', not $want"
  got=$(tokens "${q[@]}" "$bin")
  [[ "$got" == "$native" ]] && ok || bad "$cpu: generate gave $got, natively $native ($(cat "$work/gen.err"))"
  for t in "$@"; do
    if "${q[@]}" "$t" --gtest_brief=1 >"$work/t.out" 2>&1; then
      ok
    else
      bad "$cpu: $(basename "$t") failed: $(grep -E 'FAILED|Illegal|signal' "$work/t.out" | head -5)"
    fi
  done
  echo "qemu $cpu: path $in_use, tokens $([[ "$got" == "$native" ]] && echo equal || echo DIFFER)"
done
echo "qemu: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
