#!/usr/bin/env bash
# clang-tidy with the repository's .clang-tidy over nanochat's own .cpp files (src/, tests/,
# bench/, as the compile database of a configured build lists them; headers under include/ and
# those folders through them), in parallel. Any finding fails the run.
#   cmake --preset test && tools/lint.sh [-p BUILD_DIR] [-j JOBS] [FILE...]
# BUILD_DIR defaults to build/test (any preset's folder will do: CMAKE_EXPORT_COMPILE_COMMANDS is
# on in all of them; configuring is enough, nothing needs building), JOBS to the number of cores.
# A full run takes a while (clang-tidy parses each file with all its headers): FILE... lints only
# those. (run-clang-tidy-14 cannot turn warnings into errors, hence xargs.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/test"
jobs=$(nproc)
while getopts "p:j:" opt; do
  case "$opt" in
    p) build="$(cd "$OPTARG" && pwd)" ;;
    j) jobs="$OPTARG" ;;
    *) echo "usage: tools/lint.sh [-p BUILD_DIR] [-j JOBS] [FILE...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

tidy=$(command -v clang-tidy-14 || command -v clang-tidy || true)
[[ -n "$tidy" ]] || { echo "lint: clang-tidy not found; install it with tools/setup.sh" >&2; exit 1; }
[[ -f "$build/compile_commands.json" ]] ||
  { echo "lint: $build/compile_commands.json not found; configure first: cmake --preset test" >&2; exit 1; }

if [[ $# -gt 0 ]]; then
  files=()
  for f in "$@"; do files+=("$(realpath "$f")"); done
else
  mapfile -t files < <(python3 - "$build/compile_commands.json" "$root" <<'PY'
import json, os, sys
db, root = sys.argv[1], sys.argv[2]
dirs = tuple(os.path.join(root, d) + os.sep for d in ("src", "tests", "bench"))
files = {os.path.normpath(os.path.join(e["directory"], e["file"])) for e in json.load(open(db))}
print("\n".join(sorted(f for f in files if f.startswith(dirs) and f.endswith(".cpp"))))
PY
  )
fi
echo "lint: clang-tidy on ${#files[@]} files, $jobs at a time" >&2

# Each file's findings are printed together, once it is done, without clang's "N warnings
# generated" counts (of the system headers it does not report on). The compile database is GCC's:
# clang does not know some of its flags (--param=...) and pragmas (-Wmaybe-uninitialized).
printf '%s\0' "${files[@]}" | xargs -0 -P "$jobs" -n 1 sh -c '
  out=$("$0" -p "$1" --quiet --warnings-as-errors="*" --extra-arg=-Wno-unknown-warning-option \
        --extra-arg=-Wno-unused-command-line-argument "$2" 2>&1) && status=0 || status=$?
  out=$(printf "%s\n" "$out" | grep -Ev "^[0-9]+ warnings? generated\.$")
  [ -z "$out" ] || printf "%s\n" "$out"
  exit $((status != 0))' "$tidy" "$build" && echo "lint: no findings" >&2 && exit 0
echo "lint: clang-tidy found problems (above)" >&2
exit 1
