#!/usr/bin/env bash
# nanochat chat without a terminal: one turn, then exit; -sys as llama.cpp spells it; bad input.
# (test_chat_context.sh drives it through a terminal.)
# Usage: test_chat.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

out=$(echo "First Citizen" | "$bin" chat -m "$work/model.gguf" -n 6 --temp 0 -sys "Speak." --autotune off 2>"$work/chat.err") &&
  [[ -n "$out" ]] && ok || bad "chat one turn: $(cat "$work/chat.err")"
echo "hi" | "$bin" chat -m "$work/model.gguf" -n 4 --chat-template chatml --autotune off >/dev/null 2>&1 && ok || bad "chat --chat-template"

expect_fail "chat: empty stdin" "stdin is empty" sh -c "printf '' | '$bin' chat -m '$work/model.gguf' --autotune off"
expect_fail "chat: unknown template" "chat template 'jinja9' is unknown" sh -c "echo hi | '$bin' chat -m '$work/model.gguf' --chat-template jinja9 --autotune off"

finish
