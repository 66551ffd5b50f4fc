#!/usr/bin/env bash
# The ISA units (kernel files compiled with -mavx2, -mavx512f, ...) must define no weak symbols:
# a weak copy of an inline function or template from a shared header, compiled with a unit's
# flags, could be the one the linker keeps for baseline callers — and fault on a CPU without
# those extensions. Usage: isa_units_check.sh UNIT_FILE,UNIT_FILE,... OBJECT...
set -uo pipefail
units="$1"
shift
checked=0
status=0
for obj in "$@"; do
  base=$(basename "$obj" .o)  # e.g. gemm_avx512.cpp
  [[ ",$units," == *",$base,"* ]] || continue
  checked=$((checked + 1))
  weak=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WVu]$/' | grep -v 'DW.ref.__gxx_personality_v0')
  if [[ -n "$weak" ]]; then
    echo "FAIL: $base defines weak symbols the linker could pick for baseline code:" >&2
    echo "$weak" >&2
    status=1
  fi
done
expected=$(tr , "\n" <<<"$units" | grep -c .)
if [[ $checked -ne $expected ]]; then
  echo "FAIL: found $checked of the $expected ISA unit objects ($units)" >&2
  status=1
fi
[[ $status -eq 0 ]] && echo "isa units: $checked objects, no weak symbols"
exit $status
