#!/usr/bin/env bash
# nanochat train and export: the tiny config on a slice of nanochat's own sources, a few steps
# (JSON log fields, validation, keep_last, the exported model runs, export rewrites the same
# file, a finished or existing run); config and checkpoint errors.
# Usage: test_train.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\"" >"$work/train.out" 2>"$work/train.err" &&
  python3 - "$work/train.out" <<'PY' && ok || bad "train: $(tail -3 "$work/train.err")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "loss" in l]
assert [l["step"] for l in steps] == list(range(1, 7)), steps
for l in steps:
    assert set(l) >= {"step", "loss", "ce_loss", "entropy", "lr", "grad_norm", "tokens_per_sec", "elapsed"}, l
assert any("val_bpb" in l for l in lines), lines
assert lines[-1]["done"] is True and lines[-1]["peak_memory_mib"] > 0
PY
[[ -s "$work/run/model.gguf" && $(ls "$work/run"/step-*.nckpt | wc -l) -eq 2 ]] && ok || bad "train: model.gguf or keep_last"
"$bin" generate -m "$work/run/model.gguf" -p "int" -n 5 --autotune off >/dev/null 2>&1 && ok || bad "train: generate on the exported model"
"$bin" export "$work/run" -o "$work/exported.gguf" 2>/dev/null && cmp -s "$work/exported.gguf" "$work/run/model.gguf" && ok ||
  bad "export: differs from the model train wrote"
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\"" --resume >"$work/again.out" 2>"$work/again.err" &&
  grep -q "already finished at step 6" "$work/again.err" && [[ ! -s "$work/again.out" ]] && ok ||
  bad "train: resuming a finished run: $(cat "$work/again.err")"
# A run folder copied elsewhere resumes without a warning (only output.checkpoint_dir differs);
# a changed learning rate is named in the warning.
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/part\"" --stop-after 2 >/dev/null 2>&1
cp -r "$work/part" "$work/moved" && cp -r "$work/part" "$work/changed"
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/moved\"" --resume >/dev/null 2>"$work/moved.err" &&
  ! grep -q "config differs" "$work/moved.err" && ok || bad "resume of a moved run: $(grep -m1 warning "$work/moved.err")"
"$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/changed\"" --set training.muon_lr=0.05 --resume >/dev/null 2>"$work/changed.err" &&
  grep -q "config differs from the checkpoint's in training.muon_lr = 0.02 -> 0.05;" "$work/changed.err" && ok ||
  bad "resume with another muon_lr: $(grep -m1 -i "warning\|config" "$work/changed.err")"
expect_fail "train: existing run" "already holds checkpoints.*--resume" "$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/run\""
expect_fail "train: resume nothing" "--resume: .* holds no checkpoint" "$bin" train "${train_args[@]}" --set "output.checkpoint_dir=\"$work/none\"" --resume
expect_fail "export: mHC as llama" "--arch llama: the model has mHC-lite streams" "$bin" export "$work/run" -o "$work/x.gguf" --arch llama
cp "$(ls "$work/run"/step-*.nckpt | tail -1)" "$work/cut.nckpt" && truncate -s 5000 "$work/cut.nckpt"
expect_fail "export: truncated checkpoint" "cut.nckpt: checksum mismatch" "$bin" export "$work/cut.nckpt" -o "$work/x.gguf"

# Config errors: one line naming the file and line, the flag or the key.
printf '[model]\ndim = 256\nn_layers = 1\nn_heads = 2\nffn_dim = 256\n[training]\nlr = 1\n[data]\ninputs = ["x"]\n' >"$work/bad.toml"
expect_fail "train: unknown key" "bad.toml:7: unknown key 'training.lr'; \[training\] takes adamw_lr" "$bin" train -c "$work/bad.toml"
printf '[model]\ndim = 256\nn_layers = 1\nn_heads = 2\nffn_dim = 256\n[data]\ninputs = ["x"]\n' >"$work/good.toml"
expect_fail "train: bad --set" "--set training.batch_size=0: training.batch_size must be 1 or more" "$bin" train -c "$work/good.toml" --set training.batch_size=0
expect_fail "train: missing config" "/nonexistent.toml: cannot open" "$bin" train -c /nonexistent.toml
expect_fail "train: missing tokenizer" "data.tokenizer /nonexistent.gguf: no such file" "$bin" train -c "$work/good.toml" --set 'data.tokenizer="/nonexistent.gguf"' --set "output.checkpoint_dir=\"$work/tk\""
expect_fail "train: unwritable checkpoint_dir" "/proc/nanochat-run: cannot create directory" "$bin" train -c "$work/good.toml" --set 'output.checkpoint_dir="/proc/nanochat-run"'
expect_fail "train: warmup" "training.warmup_steps 50 must be below training.total_steps 10" "$bin" train -c "$work/good.toml" --set training.total_steps=10 --set training.warmup_steps=50

finish
