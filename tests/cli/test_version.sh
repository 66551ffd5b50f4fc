#!/usr/bin/env bash
# nanochat --version and system-info: what a bug report needs.
# Usage: test_version.sh path/to/nanochat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "$@"

# --version: version, commit, compiler, build type.
out=$("$bin" --version) && [[ "$out" =~ ^nanochat\ [0-9]+\.[0-9]+\.[0-9]+\ \(commit\ .+,\ .+,\ .+\ build ]] && ok || bad "--version: '$out'"

# The commit is the one built, not the one the build tree was configured at (cmake/Version.cmake
# refreshes it on every build; ctest's preset builds first).
# (A binary built before HEAD was committed cannot know it; that is a stale build, not this bug.)
if command -v git >/dev/null && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 &&
  [[ $(stat -c %Y "$bin") -ge $(git -C "$repo" log -1 --format=%ct HEAD) ]]; then
  head=$(git -C "$repo" rev-parse --short=12 HEAD)
  [[ "$out" == *"$head"* ]] && ok || bad "--version names another commit than HEAD ($head): '$out'"
fi

# system-info, text and JSON.
out=$("$bin" system-info 2>"$work/err") && grep -q "isa features:" <<<"$out" &&
  grep -q "kernel paths:" <<<"$out" && grep -q "cores:" <<<"$out" && ok || bad "system-info: $out"
# Cache sizes from sysfs, else from glibc (a VM without sysfs's cache folders): a size the system
# knows is shown, an unknown one says so instead of "0".
l1d=$(getconf LEVEL1_DCACHE_SIZE 2>/dev/null)
if [[ "$l1d" =~ ^[0-9]+$ && "$l1d" -gt 0 ]]; then
  grep -qE "^caches: +L1d $((l1d / 1024)) KiB, L2 ([1-9][0-9]* KiB|unknown), L3 ([1-9][0-9]* MiB|unknown)$" <<<"$out" &&
    ok || bad "system-info caches line (getconf L1d $l1d): $(grep caches: <<<"$out")"
fi
"$bin" system-info --json >"$work/si.json" 2>"$work/err" &&
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["isa_in_use"] and d["plans"] and d["cpu"]["physical_cores"] >= 1' \
    "$work/si.json" && ok || bad "system-info --json"
# Each plan names its weight layout; a forced layout is the one every plan shows.
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert all(p["layout"] in ("tq2", "stride64", "base3") for p in d["plans"]), d["plans"]' \
  "$work/si.json" && ok || bad "system-info --json: plans without a layout"
NANOCHAT_ISA=scalar NANOCHAT_LAYOUT=tq2 "$bin" system-info --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert {p["layout"] for p in d["plans"]} == {"tq2"}, d["plans"]' &&
  ok || bad "NANOCHAT_LAYOUT=tq2 not shown in the plans"
# A prefill row shows the plan prefill runs: on the packing of the matrix's one-token plan (its
# kernel, layout and tile rows). With a cached one-token plan in base3 and 8-row tiles, the prefill
# row of that shape is base3 with 8-row tiles too, not the stride64 default a free choice would get.
if grep -q "1.6-bit base3" <<<"$out"; then
  python3 - "$work/si.json" "$bin" <<'PY' && ok || bad "system-info: a prefill row ignores its shape's one-token plan"
import json, os, subprocess, sys
info = json.load(open(sys.argv[1]))
cache, threads = info["autotune"]["cache"], info["threads"]
plan = {"isa": "avx512", "layout": "base3", "ns_per_call": 1000.0, "tile_rows": 8,
        "token_block": 1, "variant": 0, "weights": "memory"}
os.makedirs(os.path.dirname(cache), exist_ok=True)
json.dump({"format": "nanochat-autotune", "version": 4,
           "cpu": cache.rsplit("autotune-", 1)[1][:-len(".json")],
           "plans": {f"2560x2560/b1/t{threads}/any/rany/any": plan}}, open(cache, "w"))
out = subprocess.run([sys.argv[2], "system-info", "--json"], capture_output=True, text=True,
                     check=True)
plans = {p["shape"]: p for p in json.loads(out.stdout)["plans"]}
for shape in ("decode attn 2560x2560", "prefill attn 2560x2560"):
    p = plans[shape]
    assert (p["kernel"], p["layout"], p["tile_rows"]) == ("avx512-vnni", "base3", 8), (shape, p)
assert plans["decode attn 2560x2560"]["source"] == "cache", plans
PY
fi
NANOCHAT_ISA=scalar "$bin" system-info | grep -q "in use: scalar" && ok || bad "NANOCHAT_ISA=scalar not honoured"
NANOCHAT_NO_GFNI=1 NANOCHAT_NO_AVX_VNNI=1 "$bin" system-info |
  grep -q "unpacks with shift and mask.*multiplies with vpmaddubsw" && ok ||
  bad "NANOCHAT_NO_GFNI / NANOCHAT_NO_AVX_VNNI not reported by system-info"

finish
