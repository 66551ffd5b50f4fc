#!/usr/bin/python3
"""Training speed: nanochat against PyTorch on the CPU, same model, same settings.

Reads a training config (default configs/small.toml: dim 256, 4 layers, seq 256, batch 8), runs
`nanochat benchmark train` and bench/train_reference.py (PyTorch, Debian's python3-torch on
OpenBLAS) alternately, twice each, at each thread count, and prints median tokens/s and the
ratio. Both sides use the same float precision for the backward and Muon: bf16 (PyTorch's
autocast, Newton-Schulz in bf16) when the CPU has AVX512_BF16, else fp32 (--precision to choose).
At more than one thread PyTorch gets its better split between its own threads and OpenBLAS's
(both busy at once oversubscribe the cores).

  bench/compare_training.py [--nanochat build/release/src/nanochat] [--config configs/small.toml]
                            [--threads 1,2] [--steps 10] [--precision auto|fp32|bf16]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tomllib

# PyTorch comes from Debian (python3-torch): under another interpreter first on PATH (pyenv,
# a virtual environment), run again with Debian's.
if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
    try:
        import torch  # noqa: F401
    except ImportError:
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def nanochat_rate(binary, config, threads, steps, overrides):
    args = [binary, "benchmark", "train", "-c", config, "-t", str(threads), "--steps", str(steps),
            "-o", "json"]
    for o in overrides:
        args += ["--set", o]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"][0]["tokens_per_second"]


def torch_rate(shape, threads, blas_threads, steps, bf16):
    args = [sys.executable, os.path.join(HERE, "train_reference.py"), "--threads", str(threads),
            "--blas-threads", str(blas_threads), "--steps", str(steps)] + (["--bf16"] if bf16 else [])
    for key, value in shape.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["tokens_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanochat", default=os.path.join(REPO, "build/release/src/nanochat"))
    ap.add_argument("--config", default=os.path.join(REPO, "configs/small.toml"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="all", choices=["all", "auto", "fp32", "bf16"],
                    help="float GEMM precision of the backward (and Muon) on both sides; auto: "
                         "bf16 when the CPU has AVX512_BF16, as nanochat decides; all: fp32, "
                         "then bf16 where the CPU has it")
    ap.add_argument("--set", action="append", default=[],
                    help="another override for nanochat's config (section.key=value)")
    a = ap.parse_args()
    info = json.loads(subprocess.run([a.nanochat, "system-info", "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    has_bf16 = "avx512bf16" in json.dumps(info)
    if a.precision == "all":
        precisions = ["fp32", "bf16"] if has_bf16 else ["fp32"]
    elif a.precision == "auto":
        precisions = ["bf16" if has_bf16 else "fp32"]
    else:
        precisions = [a.precision]
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    m, t = cfg["model"], cfg["training"]
    if m.get("mhc_n_streams", 1) != 1 or m.get("sub_norms") or m.get("tied_embeddings") or \
            m.get("ffn_activation", "swiglu") != "swiglu" or t.get("grad_accum", 1) != 1:
        sys.exit("compare_training.py: the PyTorch reference builds one-stream, untied SwiGLU "
                 "models without sub-norms or accumulation; use a config like configs/small.toml")
    vocab = m.get("vocab_size", 0) or cfg.get("data", {}).get("tokenizer_vocab_size", 4096)
    shape = dict(dim=m["dim"], layers=m["n_layers"], heads=m["n_heads"],
                 kv_heads=m.get("n_kv_heads", m["n_heads"]), ffn=m["ffn_dim"], vocab=vocab,
                 seq=t["seq_len"], batch=t["batch_size"])
    print(f"config: {a.config} ({', '.join(f'{k} {v}' for k, v in shape.items())})\n")
    print("| precision | threads | nanochat tokens/s | PyTorch tokens/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for precision in precisions:
        overrides = a.set + [f"training.matmul_precision={precision}"]
        for threads in (int(x) for x in a.threads.split(",")):
            splits = [(threads, 1)] if threads == 1 else [(threads, 1), (1, threads)]
            ours, theirs = [], []
            for _ in range(2):
                ours.append(nanochat_rate(a.nanochat, a.config, threads, a.steps, overrides))
                theirs.append(max(torch_rate(shape, tt, bt, a.steps, precision == "bf16")
                                  for tt, bt in splits))
            n, p = statistics.median(ours), statistics.median(theirs)
            print(f"| {precision} | {threads} | {n:.0f} | {p:.0f} | {n / p:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
