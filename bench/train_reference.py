#!/usr/bin/python3
"""PyTorch reference for nanochat's training benchmark.

Trains the same model nanochat trains, with the same settings, on the CPU: a BitNet b1.58
transformer (RMSNorm pre-norm, RoPE on adjacent pairs, causal attention with grouped key/value
heads, SwiGLU FFN, untied ternary head), every linear layer quantization-aware (absmean ternary
weights per tensor, int8 absmax activations per token, straight-through estimators), Muon
(Nesterov momentum 0.95, 5 Newton-Schulz steps) for the hidden matrices and AdamW (0.9, 0.95)
for the rest, global-norm clipping at 1.0. Batches are random tokens: the benchmark measures
speed, not learning.

Prints one JSON object: median tokens/s over the timed steps, and the settings. Needs Debian's
python3-torch (tools/setup.sh --torch); with libopenblas0-pthread installed its BLAS calls go
to OpenBLAS. Run with /usr/bin/python3 (Debian's interpreter, where python3-torch lives).

  bench/train_reference.py --threads 1 --dim 256 --layers 4 --heads 4 --kv-heads 4 \
      --ffn 768 --vocab 2048 --seq 256 --batch 8 --steps 10
"""
import argparse
import json
import os
import statistics
import sys
import time

# OpenBLAS reads its thread count when it loads, so --blas-threads must act before torch is
# imported: PyTorch's intra-op threads and OpenBLAS's own pool oversubscribe 2 cores otherwise.
if "--blas-threads" in sys.argv:
    os.environ["OPENBLAS_NUM_THREADS"] = sys.argv[sys.argv.index("--blas-threads") + 1]

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("train_reference.py: PyTorch is missing; run tools/setup.sh --torch and use "
             "/usr/bin/python3")


def ternarize(w):
    s = w.abs().mean().clamp(min=1e-5)
    q = (w / s).round().clamp(-1, 1) * s
    return w + (q - w).detach()


def quantize_activations(x):
    m = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    q = (x * (127.0 / m)).round().clamp(-128, 127) * (m / 127.0)
    return x + (q - x).detach()


class BitLinear(nn.Module):
    def __init__(self, d_in, d_out, std=0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) * std)

    def forward(self, x):
        return F.linear(quantize_activations(x), ternarize(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, head_dim, theta=10000.0):
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * freqs[None, :]
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x, cos, sin):  # x (B, T, H, D), pairs (2i, 2i+1)
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1)
    return out.flatten(-2)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        hd = a.dim // a.heads
        self.heads, self.kv_heads, self.hd = a.heads, a.kv_heads, hd
        out_std = 0.02 / (2 * a.layers) ** 0.5
        self.attn_norm = RMSNorm(a.dim)
        self.q = BitLinear(a.dim, a.dim)
        self.k = BitLinear(a.dim, a.kv_heads * hd)
        self.v = BitLinear(a.dim, a.kv_heads * hd)
        self.o = BitLinear(a.dim, a.dim, out_std)
        self.ffn_norm = RMSNorm(a.dim)
        self.gate = BitLinear(a.dim, a.ffn)
        self.up = BitLinear(a.dim, a.ffn)
        self.down = BitLinear(a.ffn, a.dim, out_std)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        h = self.attn_norm(x)
        q = apply_rope(self.q(h).view(B, T, self.heads, self.hd), cos, sin)
        k = apply_rope(self.k(h).view(B, T, self.kv_heads, self.hd), cos, sin)
        v = self.v(h).view(B, T, self.kv_heads, self.hd)
        group = self.heads // self.kv_heads
        if group > 1:
            k = k.repeat_interleave(group, dim=2)
            v = v.repeat_interleave(group, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) * (self.hd ** -0.5)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(B, T, C))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(a.vocab, a.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim)
        self.head = BitLinear(a.dim, a.vocab)
        cos, sin = rope_tables(a.seq, a.dim // a.heads)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", torch.triu(torch.ones(a.seq, a.seq, dtype=torch.bool), 1))

    def forward(self, tokens):
        x = self.embed[tokens]
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        return self.head(self.norm(x))


def newton_schulz5(g, dtype=torch.float32):
    a, b, c = 3.4445, -4.7750, 2.0315
    x = (g / (g.norm() + 1e-7)).to(dtype)
    transpose = x.shape[0] > x.shape[1]
    if transpose:
        x = x.T
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transpose else x).float()


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr=0.02, momentum=0.95, dtype=torch.float32):
        super().__init__(params, dict(lr=lr, momentum=momentum))
        self.dtype = dtype  # Newton-Schulz in bf16, as Muon's reference runs it, with --bf16

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "m" not in state:
                    state["m"] = torch.zeros_like(p)
                m = state["m"]
                m.mul_(group["momentum"]).add_(p.grad)
                u = newton_schulz5(p.grad + group["momentum"] * m, self.dtype)
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                p.add_(u, alpha=-group["lr"] * scale)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    ap.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true",
                    help="forward and backward under torch.autocast(cpu, bfloat16), Muon's "
                         "Newton-Schulz in bf16 (what nanochat's matmul_precision=bf16 does)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Model(a)
    hidden = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and n.startswith("blocks."))]
    muon = Muon(hidden, dtype=torch.bfloat16 if a.bf16 else torch.float32)
    adamw = torch.optim.AdamW(rest, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator().manual_seed(2)
    rates = []
    for step in range(a.warmup + a.steps):
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, a.vocab),
                                   tokens[:, 1:].reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        muon.step()
        adamw.step()
        elapsed = time.perf_counter() - start
        if step >= a.warmup:
            rates.append(a.batch * a.seq / elapsed)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "threads": a.threads,
        "blas_threads": a.blas_threads,
        "bf16": a.bf16,
        "tokens_per_second": statistics.median(rates),
        "steps": a.steps,
        "loss": loss.item(),
        "shape": dict(dim=a.dim, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn,
                      vocab=a.vocab, seq=a.seq, batch=a.batch),
    }))


if __name__ == "__main__":
    main()
