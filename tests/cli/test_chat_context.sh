#!/usr/bin/env bash
# nanochat chat in a terminal when the conversation fills the context: turns dropped, a message
# too long refused, an answer cut, and chat goes on and exits 0 (chat_context.py says how).
# Usage: test_chat_context.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"
make_tiny_model

/usr/bin/python3 "$(dirname "$0")/chat_context.py" "$bin" "$work/model.gguf" "$work" && ok ||
  bad "chat context (the checks above)"

finish
