#!/usr/bin/env bash
# Fine-tuning: a tiny base run, then train --init on chat data and chatting with the result; a
# missing or foreign --init file, another shape, a bad chat record, chat data without a model.
# Usage: test_finetune.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

"$bin" train -c "$repo/configs/tiny.toml" --set "data.inputs=[\"$repo/src/train\"]" --set training.total_steps=6 \
  --set "output.checkpoint_dir=\"$work/base\"" --json --autotune off >/dev/null 2>&1 && ok || bad "base run"
python3 - "$work/chat.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(40):
        f.write(json.dumps({"messages": [
            {"role": "user", "content": f"Write a Rust function that adds {i}."},
            {"role": "assistant", "content": f"fn add{i}(x: i32) -> i32 {{\n    x + {i}\n}}"}]}) + "\n")
PY
chat_args=(-c "$repo/configs/tiny.toml" --set data.format=chat --set "data.inputs=[\"$work/chat.jsonl\"]"
  --set 'data.include=[".jsonl"]' --set training.total_steps=4 --set training.warmup_steps=1 --autotune off)
"$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/chat\"" --init "$work/base/model.gguf" --json \
  >"$work/chat.log" 2>"$work/chat.err" && grep -q "init: weights and tokenizer from" "$work/chat.err" &&
  grep -q "assistant targets" "$work/chat.err" && ok || bad "train --init on chat data: $(cat "$work/chat.err")"
"$bin" info -m "$work/chat/model.gguf" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); t=d["chat_template"]; assert "Assistant:" in t, t' &&
  ok || bad "the chat model carries its template"
echo "Write a Rust function that adds 3." | "$bin" chat -m "$work/chat/model.gguf" -n 8 --autotune off >/dev/null 2>"$work/c.err" &&
  ok || bad "chat with the tuned model: $(cat "$work/c.err")"

expect_fail "train --init: missing file" "--init /nonexistent/base.gguf: no such file" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c2\"" --init /nonexistent/base.gguf
"$bin" tokenizer train "$repo/src/eval" "$repo/src/train" -o "$work/tok.gguf" --vocab-size 400 2>/dev/null &&
  "$bin" model random --tokenizer "$work/tok.gguf" -o "$work/llama.gguf" --arch llama 2>/dev/null || bad "a llama model"
expect_fail "train --init: another architecture" "--init .*llama.gguf: architecture 'llama'" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c3\"" --init "$work/llama.gguf"
expect_fail "train --init: another shape" "model.dim is 256 in the --init model but 512" \
  "$bin" train "${chat_args[@]}" --set model.dim=512 --set "output.checkpoint_dir=\"$work/c4\"" --init "$work/base/model.gguf"
printf '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": 5}\n' >"$work/bad.jsonl"
expect_fail "train: bad chat record" "bad.jsonl:2: no \"messages\" array" \
  "$bin" train "${chat_args[@]}" --set "data.inputs=[\"$work/bad.jsonl\"]" --set "output.checkpoint_dir=\"$work/c5\"" --init "$work/base/model.gguf"
expect_fail "train: chat without a model" "data.format = \"chat\" fine-tunes a model" \
  "$bin" train "${chat_args[@]}" --set "output.checkpoint_dir=\"$work/c6\""

finish
