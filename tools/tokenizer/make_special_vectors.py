#!/usr/bin/python3
"""Expected token ids for texts holding special-looking markers ("</s>", "<|endoftext|>", FIM
markers, ...), with and without special-token parsing, from llama.cpp's own tokenizer
(`llama-tokenize`, Debian sid's llama.cpp-tools). Run where llama-tokenize is installed, e.g. in
a `debootstrap --variant=minbase --include=llama.cpp-tools sid` chroot:

    python3 make_special_vectors.py VOCAB_DIR > specials.jsonl

Writes one JSON object per line: vocab (file name), text, special (bool), ids.
"""
import json
import os
import subprocess
import sys

TEXTS = [
    "a</s>b", "x<|endoftext|>y", "q<|end|>r", "u<|assistant|>v", "s<s>t", "<unk> z",
    "p<|im_end|>q", "<|fim_prefix|>fn<|fim_suffix|>x<|fim_middle|>", "<PRE> a <SUF> b <MID>",
    "<fim_prefix>def<fim_suffix>", "hello </s> world </s>", "<|user|>\nhi<|end|>\n<|assistant|>",
    "<EOT> and _<EOT>", "<|eot_id|><|start_header_id|>", "plain text only",
]


def ids(vocab, text, special):
    cmd = ["llama-tokenize", "-m", vocab, "-p", text, "--ids", "--log-disable", "--no-bos"]
    if not special:
        cmd.append("--no-parse-special")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def main(folder):
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".gguf"):
            continue
        for text in TEXTS:
            for special in (False, True):
                print(json.dumps({"vocab": name, "text": text, "special": special,
                                  "ids": ids(os.path.join(folder, name), text, special)},
                                 ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
