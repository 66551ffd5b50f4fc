#!/usr/bin/python3
"""Tokens/s of nanochat.Model(...)(stream=True) against `nanochat generate` on the default model
(the issue's per-token overhead check). Usage: PYTHONPATH=build/release/python bench/python_stream.py build/release/src/nanochat"""
import json, statistics, subprocess, sys, time
import nanochat
binary = sys.argv[1]
m = nanochat.Model(n_threads=2)
py, cli = [], []
for _ in range(7):
    t0 = None
    for c in m("fn main() {", max_tokens=400, ignore_eos=True, seed=1, stream=True):
        if t0 is None:
            t0 = time.perf_counter()
    py.append(399 / (time.perf_counter() - t0))
    out = subprocess.run([binary, "generate", "-p", "fn main() {", "-n", "400", "--ignore-eos", "-s", "1",
                          "-t", "2", "--json"], capture_output=True, text=True, check=True)
    cli.append(json.loads(out.stdout)["timings"]["eval_tokens_per_second"])
print(f"python stream=True: {statistics.median(py):.0f} tokens/s, nanochat generate: {statistics.median(cli):.0f} tokens/s, ratio {statistics.median(py)/statistics.median(cli):.3f}")
