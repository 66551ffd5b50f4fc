#!/usr/bin/env python3
"""Checks nanochat's GGUF writer and reader against an independent reader.

Writes a sample file with nanochat's writer (tests/tools/gguf_sample), reads it with
../shared/tools/gguf-dump.mjs (npm @huggingface/gguf) and with `nanochat info --json`, and
requires that both agree on every metadata value and the tensor table; decodes the TQ1_0 / TQ2_0
tensor bytes with the decoders below (written from the format description, independent of the
C++) and compares them with the trits the writer was given. Then reads the shared vocabulary
files with both readers.

usage: gguf_crosscheck.py NANOCHAT GGUF_SAMPLE GGUF_DUMP_MJS GGUF_JS_DIR SHARED_TOKENIZER_DIR
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

nanochat, sample_tool, dump_mjs, js_dir, vocab_dir = sys.argv[1:6]
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, env=env)
    return json.loads(out.stdout)


def dump(path):
    env = dict(os.environ, GGUF_JS_DIR=js_dir)
    return run_json(["node", dump_mjs, "--full-arrays", path], env)


def ours(path):
    return run_json([nanochat, "info", "--json", "--all", "-m", path])


def same_value(type_name, a, b):
    """a from gguf-dump (64-bit ints as strings), b from nanochat."""
    t = type_name.lower()
    if t in ("uint64", "int64"):
        return int(a) == int(b)
    if t in ("float32", "float64"):
        return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a))
    if t == "string" and isinstance(b, str) and b.startswith("\ufeff"):
        # JavaScript's TextDecoder drops a leading byte-order mark (llama-spm's token 30143 is
        # exactly U+FEFF); nanochat keeps the string's bytes as they are.
        return a == b[1:]
    return a == b


def compare(path):
    d, o = dump(path), ours(path)
    check(d["checks"]["ok"], f"{path}: gguf-dump consistency problems {d['checks']['problems']}")
    check(int(d["tensor_data_offset"]) == o["data_offset"] or not o["tensors"],
          f"{path}: data offset {d['tensor_data_offset']} vs {o['data_offset']}")
    check(set(d["metadata"]) == set(o["metadata"]),
          f"{path}: keys differ: {set(d['metadata']) ^ set(o['metadata'])}")
    for key, dv in d["metadata"].items():
        ov = o["metadata"].get(key)
        if ov is None:
            continue
        check(dv["type"].lower() == ov["type"], f"{path}: {key} type {dv['type']} vs {ov['type']}")
        if dv["type"].lower() == "array":
            check(dv["subtype"].lower() == ov["element_type"], f"{path}: {key} element type")
            check(dv["length"] == ov["length"], f"{path}: {key} length {dv['length']} vs {ov['length']}")
            et = dv["subtype"]
            check(len(dv["value"]) == len(ov["value"]) and all(
                same_value(et, x, y) for x, y in zip(dv["value"], ov["value"])), f"{path}: {key} items")
        else:
            check(same_value(dv["type"], dv["value"], ov["value"]),
                  f"{path}: {key} value {dv['value']!r} vs {ov['value']!r}")
    check(len(d["tensors"]) == len(o["tensors"]), f"{path}: tensor count")
    for dt, ot in zip(d["tensors"], o["tensors"]):
        check(dt["name"] == ot["name"], f"{path}: tensor name {dt['name']} vs {ot['name']}")
        check(dt["shape"] == ot["shape"], f"{path}: {dt['name']} shape")
        check(dt["dtype"] == ot["type_id"], f"{path}: {dt['name']} type")
        check(int(dt["offset"]) == ot["offset"], f"{path}: {dt['name']} offset")
        check(dt["n_bytes"] is not None and int(dt["n_bytes"]) == ot["bytes"], f"{path}: {dt['name']} bytes")
    return d


def half(b):
    return struct.unpack("<e", b)[0]


def decode_tq2(block):
    out = [0] * 256
    for h in range(2):
        for m in range(32):
            byte = block[h * 32 + m]
            for l in range(4):
                out[h * 128 + l * 32 + m] = ((byte >> (2 * l)) & 3) - 1
    return out, half(block[64:66])


def digit(byte, n):
    return (((byte * 3 ** n) & 0xFF) * 3 >> 8) - 1


def decode_tq1(block):
    out = [0] * 256
    qs, qh = block[:48], block[48:52]
    for n in range(5):
        for m in range(32):
            out[n * 32 + m] = digit(qs[m], n)
        for m in range(16):
            out[160 + n * 16 + m] = digit(qs[32 + m], n)
    for n in range(4):
        for j in range(4):
            out[240 + n * 4 + j] = digit(qh[j], n)
    return out, half(block[52:54])


with tempfile.TemporaryDirectory() as tmp:
    sample = os.path.join(tmp, "sample.gguf")
    expected_path = os.path.join(tmp, "expected.json")
    subprocess.run([sample_tool, sample, expected_path], check=True)
    expected = json.load(open(expected_path))
    d = compare(sample)
    raw = open(sample, "rb").read()
    start = int(d["tensor_data_offset"])
    for t in d["tensors"]:
        if t["name"] not in expected:
            continue
        size, decode = (66, decode_tq2) if t["dtype"] == 35 else (54, decode_tq1)
        data = raw[start + int(t["offset"]): start + int(t["offset"]) + int(t["n_bytes"])]
        trits, scales = [], []
        for b in range(0, len(data), size):
            tr, s = decode(data[b:b + size])
            trits += tr
            scales.append(s)
        check(trits == expected[t["name"]]["trits"], f"{t['name']}: decoded trits differ")
        check(scales == expected[t["name"]]["scales"], f"{t['name']}: decoded scales differ")
    # The writer is deterministic: the same input gives the same bytes.
    again = os.path.join(tmp, "again.gguf")
    subprocess.run([sample_tool, again, os.path.join(tmp, "e2.json")], check=True)
    check(open(again, "rb").read() == raw, "writer output is not deterministic")

for name in sorted(os.listdir(vocab_dir)):
    if name.endswith(".gguf"):
        compare(os.path.join(vocab_dir, name))

for f in failures:
    print("FAIL:", f, file=sys.stderr)
print(f"gguf crosscheck: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
