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

# The line ending echo adds is not part of the message: with and without it (or with CR LF) the
# default model is asked the same thing, and answers the same (it once answered the newline).
ask() { printf "$1" | "$bin" chat --temp 0 -n 8 --autotune off 2>>"$work/chat.err"; }
plain=$(ask 'Write a Rust function that adds two numbers')
[[ -n "$plain" && "$(ask 'Write a Rust function that adds two numbers\n')" == "$plain" &&
  "$(ask 'Write a Rust function that adds two numbers\r\n\n')" == "$plain" ]] && ok ||
  bad "piped chat: a trailing newline changes the answer: $(cat "$work/chat.err")"
# A message the context cannot hold: one line naming -c and a failing exit, not a silent 0.
expect_fail "chat: message longer than the context" \
  "^nanochat: this message takes [0-9]+ tokens; with room for an answer it does not fit the context of 8 tokens: shorten it, or pass a larger -c$" \
  sh -c "echo 'Write a Rust function that adds two numbers' | '$bin' chat -c 8 --autotune off"

expect_fail "chat: empty stdin" "stdin is empty" sh -c "printf '' | '$bin' chat -m '$work/model.gguf' --autotune off"
expect_fail "chat: unknown template" "chat template 'jinja9' is unknown" sh -c "echo hi | '$bin' chat -m '$work/model.gguf' --chat-template jinja9 --autotune off"

finish
