# Shared by the CLI test scripts (sourced): counters and expect_fail. The script sets $work.
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# expect_fail NAME PATTERN CMD... : non-zero exit, exactly one line on stderr matching PATTERN,
# nothing on stdout.
expect_fail() {
  local name="$1" pattern="$2"
  shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$work/err")
  if [[ $rc -eq 0 ]]; then bad "$name: exit 0"; return; fi
  if [[ $lines -ne 1 ]]; then bad "$name: $lines lines on stderr: $(cat "$work/err")"; return; fi
  if ! grep -qE -- "$pattern" "$work/err"; then bad "$name: stderr '$(cat "$work/err")' lacks /$pattern/"; return; fi
  if [[ -s "$work/out" ]]; then bad "$name: wrote to stdout"; return; fi
  ok
}

# expect_usage NAME PATTERN CMD...: as expect_fail, and the exit code is 2 (a usage error).
expect_usage() {
  local before=$fail
  expect_fail "$@"
  [[ $fail -eq $before ]] || return
  "${@:3}" >/dev/null 2>&1
  local rc=$?
  [[ $rc -eq 2 ]] || { pass=$((pass - 1)); bad "$1: exit $rc, not 2"; }
}
