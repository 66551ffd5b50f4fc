#!/usr/bin/env bash
# nanochat tokenizer train: files, folders with --ext, globs; the result tokenizes and
# round-trips; bad input.
# Usage: test_tokenizer_train.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

make_source_tree
train_tiny_tokenizer 2>"$work/train.err" && grep -q "read 3 files" "$work/train.err" &&
  grep -q "skipped 1 binary, 1 by extension" "$work/train.err" && ok || bad "tokenizer train: $(cat "$work/train.err")"
text='First Citizen: Before we proceed any further, hear me speak.'
"$bin" tokenize -m "$work/tok.gguf" -p "$text" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert "".join(d["pieces"]) == sys.argv[1], d
assert len(d["ids"]) < 25, d' "$text" && ok || bad "trained tokenizer"

printf 'def main():\n    return 42\n' >"$work/code.py"
expect_fail "train: missing input" "/nonexistent/corpus: no such file or folder" "$bin" tokenizer train /nonexistent/corpus -o "$work/x.gguf"
expect_fail "train: empty glob" "matches no files" "$bin" tokenizer train "$work/*.nothing" -o "$work/x.gguf"
expect_fail "train: tiny vocab" "--vocab-size 10: must be at least 259" "$bin" tokenizer train "$work/code.py" -o "$work/x.gguf" --vocab-size 10
expect_fail "train: no output" "--output is required" "$bin" tokenizer train "$work/code.py"

finish
