#!/usr/bin/python3
"""Throughput and latency of `nanochat serve` with concurrent streams (the issue's serving target).

    bench/serve.py -m MODEL [-t 2] [--streams 1,4,8] [--tokens 64] [--reps 3] [--binary PATH]

Starts the server on a free loopback port with -np equal to the largest stream count, then for
each count runs that many streaming completions of --tokens tokens at once (ignore_eos, so every
stream generates them all) and reports the aggregate generated tokens/s (median of --reps runs)
and its ratio to one stream. Last, the time to first token of a 64-token prompt sent while
(largest - 1) other streams decode. Standard library only.
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stream(port, prompt, tokens, seed, out):
    """One streaming completion; out gets (first token time, end time, tokens)."""
    start = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", body=json.dumps({
        "prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "seed": seed,
        "stream": True, "stream_options": {"include_usage": True}}),
        headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    first = None
    generated = 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if first is None and any(ch.get("text") for ch in chunk["choices"]):
            first = time.perf_counter() - start
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
    c.close()
    out.append((first, time.perf_counter() - start, generated))


def run_streams(port, n, tokens, prompt):
    results = []
    threads = [threading.Thread(target=stream, args=(port, prompt, tokens, i, results))
               for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r[2] for r in results)
    assert total == n * tokens, f"{total} tokens generated, expected {n * tokens}"
    return total / wall


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-t", "--threads", default="2")
    p.add_argument("--streams", default="1,4,8")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--binary", default=os.path.join(ROOT, "build/release/src/nanochat"))
    a = p.parse_args()
    counts = [int(x) for x in a.streams.split(",")]
    slots = max(counts)
    proc = subprocess.Popen([a.binary, "serve", "-m", a.model, "--port", "0", "-np", str(slots),
                             "-t", a.threads, "-c", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
        port = int(m.group(1))
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        prompt = "fn main() {"
        run_streams(port, slots, 8, prompt)  # warm-up: the autotuner measures the batch shapes
        rates = {}
        for n in counts:
            rates[n] = statistics.median(run_streams(port, n, a.tokens, prompt)
                                         for _ in range(a.reps))
            print(f"{n} streams x {a.tokens} tokens: {rates[n]:7.1f} tokens/s aggregate "
                  f"({rates[n] / rates[counts[0]]:.2f}x {counts[0]} stream)", flush=True)
        # TTFT of a 64-token prompt while the other slots decode.
        long_prompt = list(range(1000, 1064))  # 64 token ids
        ttfts = []
        for _ in range(a.reps):
            background = []
            threads = [threading.Thread(target=stream, args=(port, prompt, 256, i, background))
                       for i in range(slots - 1)]
            for t in threads:
                t.start()
            time.sleep(2.0)  # they are decoding
            probe = []
            stream(port, long_prompt, 4, 99, probe)
            ttfts.append(probe[0][0])
            for t in threads:
                t.join()
        print(f"time to first token, {len(long_prompt)}-token prompt beside {slots - 1} "
              f"decoding streams: {statistics.median(ttfts) * 1e3:.0f} ms (median of {a.reps})")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
