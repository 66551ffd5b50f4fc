#!/usr/bin/python3
"""A small byte-level BPE vocabulary for the pre-tokenizer vectors: merges trained on the test
texts themselves, whole (no pre-tokenization), so that tokens run across every boundary a
pre-tokenizer could draw and a different split gives different ids. GPT-2 style (byte
characters, `tokenizer.ggml.model = gpt2`), one control token <|endoftext|> as BOS and EOS.

    python3 make_pre_vocab.py TEXTS.json OUT.gguf [MERGES]

Standard library only; deterministic (ties go to the smallest pair).
"""
import json
import struct
import sys
from collections import Counter


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train(texts, n_merges):
    chars = byte_chars()
    vocab = [chars[b] for b in range(256)]
    seqs = [[chars[b] for b in t.encode()] for t in texts if t]
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for s in seqs:
            pairs.update(zip(s, s[1:]))
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        a, b = best[0]
        merges.append(a + " " + b)
        vocab.append(a + b)
        for i, s in enumerate(seqs):
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
    return vocab, merges


def gguf(kvs):
    def string(s):
        b = s.encode()
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, kind, value in kvs:
        out += string(key)
        if kind == "str":
            out += struct.pack("<I", 8) + string(value)
        elif kind == "u32":
            out += struct.pack("<II", 4, value)
        elif kind == "f32":
            out += struct.pack("<If", 6, value)
        elif kind == "strs":
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(string(v) for v in value)
        elif kind == "i32s":
            out += struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
    return out


def main(texts_file, out, n_merges=2000):
    texts = json.load(open(texts_file, encoding="utf-8"))
    vocab, merges = train(texts, int(n_merges))
    assert len(set(vocab)) == len(vocab)
    tokens = vocab + ["<|endoftext|>"]
    types = [1] * len(vocab) + [3]
    eot = len(tokens) - 1
    kvs = [
        ("general.architecture", "str", "gpt2"),
        ("general.name", "str", "nanochat-pre-vectors"),
        ("gpt2.block_count", "u32", 1),
        ("gpt2.context_length", "u32", 1024),
        ("gpt2.embedding_length", "u32", 64),
        ("gpt2.feed_forward_length", "u32", 256),
        ("gpt2.attention.head_count", "u32", 1),
        ("gpt2.attention.layer_norm_epsilon", "f32", 1e-5),
        ("tokenizer.ggml.model", "str", "gpt2"),
        ("tokenizer.ggml.pre", "str", "gpt-2"),
        ("tokenizer.ggml.tokens", "strs", tokens),
        ("tokenizer.ggml.token_type", "i32s", types),
        ("tokenizer.ggml.merges", "strs", merges),
        ("tokenizer.ggml.bos_token_id", "u32", eot),
        ("tokenizer.ggml.eos_token_id", "u32", eot),
    ]
    open(out, "wb").write(gguf(kvs))
    print(f"{len(tokens)} tokens, {len(merges)} merges", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
