#!/usr/bin/python3
"""A tiny BitNet b1.58 model laid out exactly as bitnet.cpp writes ggml-model-i2_s.gguf for
microsoft/BitNet-b1.58-2B-4T (architecture `bitnet-25`): the same metadata keys in the same
order, the same tensor names, order and types, and I2_S tensors as bitnet.cpp's x86
quantize_i2_s stores them. README.md in this folder says which part of bitnet.cpp each choice
follows. Standard library only; the output is deterministic.

usage: make_bitnet25.py OUT.gguf [--tied] [--arch NAME] [--no-scale TENSOR]
                                 [--truncate-in TENSOR]

  --tied               no output.weight: the head is the embedding (the first 2B4T upload)
  --arch NAME          general.architecture NAME, hyperparameter keys still under bitnet-25.
  --no-scale TENSOR    write the I2_S tensor TENSOR without its 32-byte scale trailer
  --truncate-in TENSOR end the file half-way through TENSOR's data
"""
import random
import struct
import sys

# Hyperparameters: BitNet b1.58 2B4T's shape made small (2B4T: dim 2560, 30 layers, 20 heads,
# 5 KV heads, ffn 6912, vocab 128256, context 4096). Rows are multiples of 256 so that the same
# weights can also be written as TQ2_0 (the unit test's reference file).
DIM, LAYERS, HEADS, KV_HEADS, FFN, CTX = 256, 2, 4, 1, 256, 4096
EPS, THETA = 1e-5, 500000.0
SEED = 2025

# GGUF value types and ggml tensor types.
U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9
T_F32, T_F16, T_I2_S = 0, 1, 36
ALIGN = 32  # no general.alignment key: GGUF's default
LLAMA_FTYPE_MOSTLY_I2_S = 40

# The chat template bitnet.cpp's converter (utils/convert-ms-to-gguf-bitnet.py, write_all) sets
# for every `bitnet*` architecture.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + "
    "'\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")

TEXT = ("the quick brown fox jumps over the lazy dog. the cat sat on the mat and the dog sat "
        "on the log. def main(): return the answer to the question of life\n") * 4


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def value(vtype, v):
    if vtype == STR:
        return gstr(v)
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, x) for x in items)
    return struct.pack({U32: "<I", I32: "<i", F32: "<f", BOOL: "<?"}[vtype], v)


def byte_symbols():
    """GPT-2's byte-to-symbol map (printable bytes stand for themselves, the others are shifted
    past 255), in the order llama3's vocabulary lists the 256 byte tokens."""
    order = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    symbol = {b: chr(b) for b in order}
    extra = 0
    for b in range(256):
        if b not in symbol:
            symbol[b] = chr(256 + extra)
            extra += 1
            order.append(b)
    return [symbol[b] for b in order], symbol


def vocabulary(n_merges=40):
    """A byte-level BPE vocabulary: 256 byte tokens, merges learned from TEXT, llama3's special
    tokens at the end (bos <|begin_of_text|>, eos <|end_of_text|>, eot <|eot_id|>)."""
    tokens, symbol = byte_symbols()
    words = []
    for w in TEXT.replace("\n", " \n").split(" "):
        if w:
            words.append([symbol[b] for b in (" " + w).encode()])
    merges = []
    for _ in range(n_merges):
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = max(sorted(counts), key=lambda p: counts[p])
        merges.append(best)
        tokens.append(best[0] + best[1])
        for i, w in enumerate(words):
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(w[j] + w[j + 1])
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
    types = [1] * len(tokens)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|eot_id|>"]
    bos = len(tokens)
    for s in specials:
        tokens.append(s)
        types.append(3)  # control
    return tokens, types, [a + " " + b for a, b in merges], bos, bos + 1


def i2_s(trits, scale):
    """bitnet.cpp's x86 I2_S (src/ggml-bitnet-mad.cpp, quantize_i2_s with ACT_PARALLEL, which
    include/gemm-config.h defines): codes 0, 1, 2 for -1, 0, +1; the flattened tensor in groups of
    128 weights, 32 bytes each, weight j of a group in byte j % 32 at bits 6 - 2 * (j // 32); then
    32 bytes whose first 4 are the tensor's fp32 scale (the rest unused, zero here)."""
    assert len(trits) % 128 == 0
    out = bytearray(len(trits) // 4)
    for i, t in enumerate(trits):
        group, j = divmod(i, 128)
        out[group * 32 + j % 32] |= (t + 1) << (6 - 2 * (j // 32))
    return bytes(out) + struct.pack("<f", scale) + bytes(28)


def main(argv):
    args = argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    out_path, opts = args[0], args[1:]
    tied = "--tied" in opts
    arch = "bitnet-25"
    no_scale = truncate_in = None
    for flag in ("--arch", "--no-scale", "--truncate-in"):
        if flag in opts:
            i = opts.index(flag)
            if i + 1 >= len(opts):
                sys.exit(f"{flag} needs a value")
            if flag == "--arch":
                arch = opts[i + 1]
            elif flag == "--no-scale":
                no_scale = opts[i + 1]
            else:
                truncate_in = opts[i + 1]

    rng = random.Random(SEED)
    tokens, types, merges, bos, eos = vocabulary()
    vocab = len(tokens)
    head_dim = DIM // HEADS
    p = "bitnet-25."  # the keys keep the converter's prefix whatever --arch says
    kv = [
        ("general.architecture", STR, arch),
        ("general.name", STR, "bitnet2b_2501"),  # convert-ms-to-gguf-bitnet.py for n_ctx 4096
        (p + "vocab_size", U32, vocab),
        (p + "context_length", U32, CTX),
        (p + "embedding_length", U32, DIM),
        (p + "block_count", U32, LAYERS),
        (p + "feed_forward_length", U32, FFN),
        (p + "rope.dimension_count", U32, head_dim),
        (p + "attention.head_count", U32, HEADS),
        (p + "attention.head_count_kv", U32, KV_HEADS),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        (p + "attention.layer_norm_rms_epsilon", F32, EPS),
        (p + "rope.freq_base", F32, THETA),
        ("general.file_type", U32, LLAMA_FTYPE_MOSTLY_I2_S),
        ("tokenizer.ggml.model", STR, "gpt2"),  # no tokenizer.ggml.pre, as in 2B4T's file
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0] * vocab)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, bos),
        ("tokenizer.ggml.eos_token_id", U32, eos),
        ("tokenizer.ggml.padding_token_id", U32, eos),
        ("tokenizer.chat_template", STR, CHAT_TEMPLATE),
        ("general.quantization_version", U32, 2),
    ]

    # Tensors in the order of the Hugging Face checkpoint's names sorted as strings (safetensors
    # keeps its header sorted; convert-ms-to-gguf-bitnet.py and llama-quantize keep that
    # order): lm_head, embed_tokens, layers 0, 1, 10, 11, ..., 2, ... and norm last.
    def f16(values):
        return b"".join(struct.pack("<e", v) for v in values)

    def f32(values):
        return b"".join(struct.pack("<f", v) for v in values)

    def norm(n):
        return (T_F32, [n], f32([round(rng.uniform(0.5, 1.5), 4) for _ in range(n)]))

    def ternary(n_in, n_out):
        trits = [rng.choice((-1, 0, 1)) for _ in range(n_in * n_out)]
        # ~ (0.5 to 1.5) / sqrt(fan-in) so activations keep their size; a multiple of 1/1024, so
        # exact in fp16 and TQ2_0 can hold it too.
        scale = round(rng.uniform(0.5, 1.5) / n_in ** 0.5 * 1024) / 1024
        return (T_I2_S, [n_in, n_out], i2_s(trits, scale))

    hf = {}
    if not tied:
        hf["lm_head.weight"] = ("output.weight",
                                (T_F16, [DIM, vocab], f16(rng.gauss(0, 0.05)
                                                          for _ in range(DIM * vocab))))
    hf["model.embed_tokens.weight"] = ("token_embd.weight",
                                       (T_F16, [DIM, vocab], f16(rng.gauss(0, 0.5)
                                                                 for _ in range(DIM * vocab))))
    for layer in range(LAYERS):
        hp, gp = f"model.layers.{layer}.", f"blk.{layer}."
        parts = {
            "input_layernorm.weight": ("attn_norm.weight", lambda: norm(DIM)),
            "mlp.down_proj.weight": ("ffn_down.weight", lambda: ternary(FFN, DIM)),
            "mlp.ffn_sub_norm.weight": ("ffn_sub_norm.weight", lambda: norm(FFN)),
            "mlp.gate_proj.weight": ("ffn_gate.weight", lambda: ternary(DIM, FFN)),
            "mlp.up_proj.weight": ("ffn_up.weight", lambda: ternary(DIM, FFN)),
            "post_attention_layernorm.weight": ("ffn_norm.weight", lambda: norm(DIM)),
            "self_attn.attn_sub_norm.weight": ("attn_sub_norm.weight", lambda: norm(DIM)),
            "self_attn.k_proj.weight": ("attn_k.weight", lambda: ternary(DIM, KV_HEADS * head_dim)),
            "self_attn.o_proj.weight": ("attn_output.weight", lambda: ternary(DIM, DIM)),
            "self_attn.q_proj.weight": ("attn_q.weight", lambda: ternary(DIM, DIM)),
            "self_attn.v_proj.weight": ("attn_v.weight", lambda: ternary(DIM, KV_HEADS * head_dim)),
        }
        for name in sorted(parts):
            gguf_name, make = parts[name]
            hf[hp + name] = (gp + gguf_name, make())
    hf["model.norm.weight"] = ("output_norm.weight", norm(DIM))

    tensors = [hf[name] for name in sorted(hf)]
    if no_scale is not None:
        names = [n for n, (t, _, _) in tensors if t == T_I2_S]
        if no_scale not in names:
            sys.exit(f"--no-scale: no I2_S tensor '{no_scale}'")
        tensors = [(n, (t, d, b[:-32] if n == no_scale else b)) for n, (t, d, b) in tensors]

    # Header, metadata, tensor infos (offsets within the data section, each aligned), data.
    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, vtype, v in kv:
        header += gstr(key) + struct.pack("<I", vtype) + value(vtype, v)
    offset, starts = 0, {}
    for name, (ttype, dims, data) in tensors:
        starts[name] = offset
        header += gstr(name) + struct.pack("<I", len(dims))
        header += b"".join(struct.pack("<Q", d) for d in dims)
        header += struct.pack("<IQ", ttype, offset)
        offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
    header += bytes(-len(header) % ALIGN)
    body = bytearray()
    for _, (_, _, data) in tensors:
        body += data + bytes(-len(data) % ALIGN)
    if truncate_in is not None:
        match = [(n, d) for n, (_, _, d) in tensors if n == truncate_in]
        if not match:
            sys.exit(f"--truncate-in: no tensor '{truncate_in}'")
        body = body[:starts[truncate_in] + len(match[0][1]) // 2]
    with open(out_path, "wb") as f:
        f.write(bytes(header) + bytes(body))


if __name__ == "__main__":
    main(sys.argv)
