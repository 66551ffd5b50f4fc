#!/usr/bin/env bash
# The repacked-weights cache: a model file of 64 MiB or more leaves its repacked weights in
# $NANOCHAT_CACHE/weights/ and the next run maps them (the same tokens); a truncated or damaged
# cache file is named in one warning, the run gives the same tokens and rewrites it;
# --no-weight-cache and NANOCHAT_NO_WEIGHT_CACHE=1 read and write none; the folder is pruned
# (a deleted model's file, then the least recently used beyond NANOCHAT_WEIGHT_CACHE_MAX_GB).
# Usage: test_weight_cache.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# ~70 MB: a float embedding of 16384 x 1024 (the ternary layers are small).
"$bin" model random --vocab 16384 --dim 1024 --layers 2 --heads 8 --ffn 1024 --ctx 64 \
  --embedding f32 --arch bitnet -o "$work/big.gguf" >/dev/null 2>&1 || bad "model random failed"
gen() { "$bin" generate "$@" -m "$work/big.gguf" -p "hello" -n 4 --temp 0 -s 1 -t 2 -c 64; }
cache_files() { ls "$NANOCHAT_CACHE"/weights/*.bin 2>/dev/null; }

gen --no-weight-cache >"$work/ref.out" 2>"$work/ref.err" || bad "generate: $(cat "$work/ref.err")"
[[ -z "$(cache_files)" ]] && ok || bad "--no-weight-cache wrote $(cache_files)"
NANOCHAT_NO_WEIGHT_CACHE=1 gen >"$work/env.out" 2>"$work/env.err" &&
  cmp -s "$work/ref.out" "$work/env.out" && [[ -z "$(cache_files)" ]] && ok ||
  bad "NANOCHAT_NO_WEIGHT_CACHE=1: $(cat "$work/env.err") $(cache_files)"

gen >"$work/w.out" 2>"$work/w.err" && cmp -s "$work/ref.out" "$work/w.out" &&
  [[ $(cache_files | wc -l) -eq 1 ]] && ok || bad "first run with the cache: $(cat "$work/w.err")"
cache=$(cache_files | head -1)
cp "$cache" "$work/good.bin"
gen >"$work/m.out" 2>"$work/m.err" && cmp -s "$work/ref.out" "$work/m.out" &&
  ! grep -q "warning" "$work/m.err" && ok || bad "mapped run: $(cat "$work/m.err")"
gen -v >/dev/null 2>"$work/v.err"
grep -q "mapped the repacked weights from $cache" "$work/v.err" && ok ||
  bad "-v does not say the weights were mapped: $(cat "$work/v.err")"

# Damage: one warning line naming the file and what is wrong; same tokens; rewritten.
damaged() {  # NAME PATTERN: after the damage was done
  gen >"$work/$1.out" 2>"$work/$1.err" && cmp -s "$work/ref.out" "$work/$1.out" &&
    [[ $(grep -c "warning" "$work/$1.err") -eq 1 ]] && grep -q "$cache is $2" "$work/$1.err" &&
    cmp -s "$cache" "$work/good.bin" && ok || bad "$1: $(cat "$work/$1.err")"
}
truncate -s 100000 "$cache"
damaged truncated "[0-9]* bytes long instead of [0-9]* (truncated or damaged)"
printf 'X' | dd of="$cache" bs=1 seek=100 conv=notrunc 2>/dev/null
damaged header "damaged (its header checksum does not match)"
: >"$cache"
damaged empty "shorter than its header (truncated)"
# A model file changed since (its modification time): the cache is stale and made again.
touch -d "1 hour ago" "$work/big.gguf"
gen >"$work/stale.out" 2>"$work/stale.err" && cmp -s "$work/ref.out" "$work/stale.out" &&
  grep -q "$cache is stale (made from another file, layout or CPU)" "$work/stale.err" && ok ||
  bad "stale: $(cat "$work/stale.err")"
gen >/dev/null 2>"$work/again.err" && ! grep -q "warning" "$work/again.err" && ok ||
  bad "after the stale cache: $(cat "$work/again.err")"
ls -a "$NANOCHAT_CACHE/weights" | grep -q "tmp-" && bad "temporaries left" || ok

# The folder stays bounded: a second model's cache (20 MB) beyond NANOCHAT_WEIGHT_CACHE_MAX_GB removes the
# least recently used one (logged with -v); a deleted model's cache goes at the next write.
cp "$work/big.gguf" "$work/big2.gguf"
NANOCHAT_WEIGHT_CACHE_MAX_GB=0.03 "$bin" generate -v -m "$work/big2.gguf" -p "hello" -n 4 --temp 0 -s 1 -t 2 -c 64 \
  >"$work/p.out" 2>"$work/p.err" && cmp -s "$work/ref.out" "$work/p.out" &&
  [[ $(cache_files | wc -l) -eq 1 ]] && [[ ! -e "$cache" ]] &&
  grep -q "removed the weight cache file $cache: the least recently used" "$work/p.err" && ok ||
  bad "budget: $(cache_files) $(cat "$work/p.err")"
gen >/dev/null 2>&1  # the first model's cache again (two files within the default budget)
rm "$work/big2.gguf"
touch -d "1 hour ago" "$work/big.gguf"  # rewritten at the next run, which prunes
gen -v >/dev/null 2>"$work/o.err" && [[ $(cache_files | wc -l) -eq 1 ]] &&
  grep -q "its model file $work/big2.gguf no longer exists" "$work/o.err" && ok ||
  bad "orphan: $(cache_files) $(cat "$work/o.err")"

finish
