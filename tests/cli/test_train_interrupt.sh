#!/usr/bin/env bash
# nanochat train interrupted: Ctrl-C checkpoints and exits 130; kill -9 at arbitrary moments never
# leaves a bad newest checkpoint, and --resume finishes the run.
# Usage: test_train_interrupt.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# Ctrl-C (SIGINT) finishes the step, writes a checkpoint and exits 130; --resume continues.
"$bin" train "${train_args[@]}" --set training.total_steps=5000 --set training.checkpoint_interval=0 \
  --set "output.checkpoint_dir=\"$work/int\"" >/dev/null 2>"$work/int.err" &
pid=$!
for _ in $(seq 300); do
  [[ $(wc -l 2>/dev/null <"$work/int/train.jsonl" || echo 0) -ge 3 ]] && break
  sleep 0.1
done
kill -INT "$pid"
wait "$pid"
rc=$?
last=$(ls "$work/int"/step-*.nckpt 2>/dev/null | tail -1)
[[ $rc -eq 130 && -n "$last" ]] && grep -q "interrupted) with a checkpoint; continue with --resume" "$work/int.err" && ok ||
  bad "train: Ctrl-C gave rc=$rc, checkpoint '$last': $(tail -2 "$work/int.err")"

# kill -9 three times, each after a resume.
kill_args=("${train_args[@]}" --set training.total_steps=80 --set training.checkpoint_interval=1
  --set "output.checkpoint_dir=\"$work/killed\"")
"$bin" train "${kill_args[@]}" >/dev/null 2>&1 &
pid=$!
killed_ok=1
# Wait for the first checkpoint (data preparation comes first; slow on a loaded machine).
for _ in $(seq 300); do
  ls "$work/killed"/step-*.nckpt >/dev/null 2>&1 && break
  sleep 0.1
done
for delay in 0.3 0.4 0.6; do
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  "$bin" export "$work/killed" -o "$work/k.gguf" 2>"$work/k.err" || { killed_ok=0; cat "$work/k.err" >&2; }
  "$bin" train "${kill_args[@]}" --resume >/dev/null 2>&1 &
  pid=$!
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
# Whatever the kills hit, plus leftovers of kills mid-write made certain (AtomicFile's pattern,
# nobody holding them), and one a live writer holds (flock, as AtomicFile does): the resume must
# remove the dead ones and leave the live one.
mkdir -p "$work/killed/data"
printf partial >"$work/killed/.step-00000099.nckpt.tmp-Dead01"
printf partial >"$work/killed/data/.train.bin.tmp-Dead02"
live="$work/killed/.model.gguf.tmp-Live03"
(exec 9>"$live" && flock 9 && exec sleep 300) >/dev/null 2>&1 &
holder=$!  # the sleep itself, holding the lock on fd 9
for _ in $(seq 100); do [[ -e "$live" ]] && ! flock -n "$live" true && break; sleep 0.1; done
"$bin" train "${kill_args[@]}" --resume >/dev/null 2>"$work/k.err" &&
  [[ $killed_ok -eq 1 && -s "$work/killed/model.gguf" ]] && ok || bad "kill -9 / resume: $(tail -2 "$work/k.err")"
[[ -e "$live" ]] && ok || bad "the resume removed a temporary file a live process holds"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
rm -f "$live"
# find, not ls: the temporaries are dot-files.
left=$(find "$work/killed" -name '.*.tmp-*')
[[ -z "$left" ]] && ok || bad "kill -9 left temporary files behind: $left"

finish
