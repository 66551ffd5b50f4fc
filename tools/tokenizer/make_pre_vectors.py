#!/usr/bin/python3
"""Expected token ids for every `tokenizer.ggml.pre` value, from llama.cpp's own tokenizer
(Debian sid's libllama). Run where libllama-dev and g++ are installed, e.g. in a
`debootstrap --variant=minbase --include=llama.cpp-tools,libllama-dev,g++ sid` chroot:

    g++ -O1 -o llama_tokenize_batch llama_tokenize_batch.cpp -lllama
    python3 make_pre_vectors.py ./llama_tokenize_batch VOCAB.gguf NAMES.txt TEXTS.json WORKDIR > pre.jsonl

For each name in NAMES.txt (one a line) a copy of VOCAB.gguf with that `tokenizer.ggml.pre` is
written to WORKDIR and every text of TEXTS.json (a list of strings) is tokenized with it, special
tokens added (BOS as the loader's defaults for that name say) and parsed — what `llama-tokenize -m
FILE -p TEXT --ids --no-escape` prints; a few texts of each name are checked against
llama-tokenize itself. Writes one JSON object per line: pre (the names that give these ids) and
ids (a list per text, in order); the last line lists the names llama.cpp refuses (pre, no ids).
Standard library only.
"""
import json
import os
import struct
import subprocess
import sys

PRE_KEY = b"tokenizer.ggml.pre"
CHECKED = (0, 6, 21)  # texts also run through llama-tokenize for each name


def with_pre(data, name):
    """The GGUF file `data` with tokenizer.ggml.pre set to `name` (the key is followed by its
    type, 8 = string, a uint64 length and the bytes)."""
    at = data.index(struct.pack("<Q", len(PRE_KEY)) + PRE_KEY) + 8 + len(PRE_KEY)
    vtype, = struct.unpack_from("<I", data, at)
    assert vtype == 8
    length, = struct.unpack_from("<Q", data, at + 4)
    value = name.encode()
    return data[:at + 4] + struct.pack("<Q", len(value)) + value + data[at + 12 + length:]


def batch(tool, vocab, texts):
    payload = b"".join(b"%d\n" % len(t.encode()) + t.encode() for t in texts)
    run = subprocess.run([tool, vocab], input=payload, capture_output=True)
    lines = run.stdout.decode().splitlines()
    if run.returncode != 0 or len(lines) != len(texts):
        return None
    return [[int(x) for x in line.split()] for line in lines]


def llama_tokenize(vocab, text):
    run = subprocess.run(["llama-tokenize", "-m", vocab, "-p", text, "--ids", "--log-disable",
                          "--no-escape"],
                         capture_output=True, check=True)
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


def main(tool, vocab, names_file, texts_file, workdir):
    data = open(vocab, "rb").read()
    names = [n.strip() for n in open(names_file, encoding="utf-8") if n.strip()]
    texts = json.load(open(texts_file, encoding="utf-8"))
    os.makedirs(workdir, exist_ok=True)
    groups = {}  # the ids of every text, as one JSON string -> names that give them
    refused = []
    for name in names:
        path = os.path.join(workdir, name + ".gguf")
        with open(path, "wb") as f:
            f.write(with_pre(data, name))
        all_ids = batch(tool, path, texts)
        if all_ids is None:
            refused.append(name)
            continue
        for i in CHECKED:
            if texts[i] and llama_tokenize(path, texts[i]) != all_ids[i]:
                sys.exit(f"{name}: llama-tokenize disagrees on text {i}")
        groups.setdefault(json.dumps(all_ids, separators=(",", ":")), []).append(name)
    for ids, group in groups.items():
        print('{"pre":%s,"ids":%s}' % (json.dumps(group), ids))
    print('{"pre":%s}' % json.dumps(refused))


if __name__ == "__main__":
    main(*sys.argv[1:6])
