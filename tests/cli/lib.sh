# shellcheck shell=bash disable=SC2034  # (the variables are for the scripts that source it)
# Shared by the CLI test scripts (tests/cli/test_*.sh, one ctest test `cli.<topic>` each), sourced
# as `source "$(dirname "$0")/lib.sh" "$@"` with the nanochat binary as the first argument.
# Each script gets a temporary folder $work and a cache NANOCHAT_CACHE of its own (the scripts
# run in parallel), counts its checks with ok / bad, and ends with `finish`.
bin="$1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tdir="$repo/tests/data/shared/testdata/text"        # texts
vdir="$repo/tests/data/shared/testdata/tokenizers"  # vocabularies with llama.cpp's ids
test_name="cli.$(basename "$0" .sh)"
test_name="${test_name/cli.test_/cli.}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The user's settings must not change what the binary does.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^NANOCHAT_ARG_')
unset NANOCHAT_ISA
export NANOCHAT_CACHE="$work/cache"

pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# The script's last command: the counts, and its exit status (non-zero when a check failed, or
# when none ran).
finish() {
  echo "$test_name: $pass passed, $fail failed"
  [[ $fail -eq 0 && $pass -gt 0 ]]
}

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

# The input of the tiny tokenizer besides the texts: a source tree with a Rust file, a Python file
# (skipped by --ext rs), a binary .rs file and a .git folder (both skipped).
make_source_tree() {
  mkdir -p "$work/src/pkg" "$work/src/.git"
  printf 'fn main() {\n    println!("hello");\n}\n' >"$work/src/pkg/a.rs"
  printf 'def f():\n    return 1\n' >"$work/src/pkg/b.py"
  printf 'secret' >"$work/src/.git/config"
  printf 'bin\0ary' >"$work/src/pkg/c.rs"
}

# The tiny tokenizer's command (test_tokenizer_train.sh checks what it reports).
train_tiny_tokenizer() {
  "$bin" tokenizer train "$tdir/tiny-shakespeare.txt" "$work/src" "$tdir/*.md" --ext rs \
    -o "$work/tok.gguf" --vocab-size 1024
}

# make_tiny_model: $work/tok.gguf (the tiny tokenizer, 1024 tokens) and $work/model.gguf (random
# weights over it: 2 streams, sub-norms, a context of 256 tokens). Under a second.
make_tiny_model() {
  make_source_tree
  train_tiny_tokenizer 2>"$work/setup.err" &&
    "$bin" model random --tokenizer "$work/tok.gguf" -o "$work/model.gguf" --streams 2 --sub-norms \
      2>>"$work/setup.err" || bad "tiny model: $(cat "$work/setup.err")"
}

# The tiny training config on a slice of nanochat's own sources, a few steps (the train tests).
train_args=(-c "$repo/configs/tiny.toml" --set "data.inputs=[\"$repo/src/train\", \"$repo/src/model\"]"
  --set data.max_bytes=60000 --set data.tokenizer_vocab_size=300 --set training.total_steps=6
  --set training.warmup_steps=1 --set training.checkpoint_interval=2 --set training.eval_interval=3
  --autotune off)

# make_code_model: $work/tok.gguf (400 tokens trained on nanochat's eval and train sources) and
# $work/tiny.gguf (random weights over it, a context of 512 tokens), for the eval and fine-tuning
# tests.
make_code_model() {
  "$bin" tokenizer train "$repo/src/eval" "$repo/src/train" -o "$work/tok.gguf" --vocab-size 400 2>/dev/null &&
    ok || bad "tokenizer train"
  "$bin" model random --tokenizer "$work/tok.gguf" -o "$work/tiny.gguf" --ctx 512 2>/dev/null && ok ||
    bad "model random"
}
