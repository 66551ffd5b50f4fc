#!/usr/bin/python3
"""Hostile GGUF files through the real binary: no input may crash nanochat.

Builds a tiny valid model per architecture (nanochat with one and two mHC streams, bitnet with
I2_S layers, llama with TQ1_0 layers; byte-level BPE and SentencePiece tokenizers) with the GGUF
writer below, written from the format description and independent of the C++. Then makes well
over a hundred hostile variants across five groups — structure, metadata types,
hyperparameters, tensor values and tokenizer contents — and runs `info`, `generate` and
`tokenize` on each under a timeout and an address-space limit. Every run must end without a
signal and without hanging; a failing run must exit 1 or 2 with exactly one line on stderr that
starts with "nanochat: " and nothing on stdout. Each case says which commands must fail and a
phrase their message must contain (the key, tensor or value at fault); the valid bases must run.

usage: hostile_gguf.py NANOCHAT [-k SUBSTRING] [-v]    (standard library only)
"""
import concurrent.futures
import math
import os
import random
import re
import resource
import struct
import subprocess
import sys
import tempfile

# GGUF metadata value types and ggml tensor types (the ids the format fixes).
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q8_0, T_BF16, T_TQ1_0, T_TQ2_0, T_I2_S = 0, 1, 8, 30, 34, 35, 36
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
          U64: "<Q", I64: "<q", F64: "<d"}

TIMEOUT_S = 20
ADDRESS_SPACE = 8 << 30  # bytes; far above what a tiny model needs, far below a wrapped size


def gstr(text):
    b = text if isinstance(text, bytes) else text.encode()
    return struct.pack("<Q", len(b)) + b


def payload(vtype, value):
    """The bytes of a value of type vtype (arrays: value = (element type, [items]))."""
    if vtype == STR:
        return gstr(value)
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(payload(etype, v) for v in items)
    return struct.pack(SCALAR[vtype], value)


def fp16(x):
    return struct.pack("<e", x)


class Gguf:
    """A GGUF file as ordered metadata and tensors, serialized with correct offsets unless told
    otherwise."""

    def __init__(self):
        self.kv = {}       # key -> (type, raw payload bytes)
        self.tensors = {}  # name -> [dims, type, data bytes]
        self.alignment = 32

    def copy(self):
        g = Gguf()
        g.kv = dict(self.kv)
        g.tensors = {k: list(v) for k, v in self.tensors.items()}
        g.alignment = self.alignment
        return g

    def set(self, key, vtype, value):
        self.kv[key] = (vtype, payload(vtype, value))
        return self

    def set_raw(self, key, vtype, raw):
        self.kv[key] = (vtype, raw)
        return self

    def drop(self, key):
        self.kv.pop(key, None)
        self.tensors.pop(key, None)
        return self

    def get(self, key):
        vtype, raw = self.kv[key]
        if vtype == STR:
            return raw[8:].decode()
        return struct.unpack(SCALAR[vtype], raw)[0]

    def serialize(self, version=3):
        head = b"GGUF" + struct.pack("<IQQ", version, len(self.tensors), len(self.kv))
        for key, (vtype, raw) in self.kv.items():
            head += gstr(key) + struct.pack("<I", vtype) + raw
        data = b""
        for name, (dims, ttype, blob) in self.tensors.items():
            data += b"\0" * ((-len(data)) % self.alignment)
            head += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            head += struct.pack("<IQ", ttype, len(data))
            data += blob
        return head + b"\0" * ((-len(head)) % self.alignment) + data


# --- tensor encodings (ggml's block layouts) ---

def tq2_0(trits, scales):
    """TQ2_0: 256 weights in 66 bytes; byte h*32+m holds in bits 2l..2l+1 the code (q+1) of weight
    h*128 + l*32 + m; then the fp16 scale."""
    out = bytearray()
    for b, d in enumerate(scales):
        x = trits[b * 256:(b + 1) * 256]
        qs = bytearray(64)
        for h in range(2):
            for m in range(32):
                qs[h * 32 + m] = sum((x[h * 128 + l * 32 + m] + 1) << (2 * l) for l in range(4))
        out += qs + fp16(d)
    return bytes(out)


def tq1_0(trits, scales):
    """TQ1_0: 256 weights in 54 bytes, base-3 digits five (four) per byte stored as
    ceil(v * 256 / 243); then the fp16 scale."""
    def pack(digits, pad):
        q = 0
        for t in digits:
            q = q * 3 + t + 1
        if pad:
            q *= 3
        return (q * 256 + 242) // 243

    out = bytearray()
    for b, d in enumerate(scales):
        x = trits[b * 256:(b + 1) * 256]
        qs = bytes(pack([x[n * 32 + m] for n in range(5)], False) for m in range(32))
        qs += bytes(pack([x[160 + n * 16 + m] for n in range(5)], False) for m in range(16))
        qh = bytes(pack([x[240 + n * 4 + j] for n in range(4)], True) for j in range(4))
        out += qs + qh + fp16(d)
    return bytes(out)


def i2_s(trits, scale):
    """I2_S (bitnet.cpp, x86): 128 weights in 32 bytes, weight j of a group in byte j%32 at bits
    6-2*(j/32), codes 0,1,2 = -1,0,+1; then one fp32 scale and padding to 32 bytes."""
    out = bytearray(len(trits) // 4)
    for i, t in enumerate(trits):
        j = i % 128
        out[(i // 128) * 32 + j % 32] |= (t + 1) << (6 - 2 * (j // 32))
    return bytes(out) + struct.pack("<f", scale) + b"\0" * 28


def f32s(values):
    return struct.pack(f"<{len(values)}f", *values)


# --- tokenizers ---

def byte_chars():
    """GPT-2's byte-to-character map."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


BPE_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "i n",
              "Ġ t", "Ġt he", "e r", "o n"]


def bpe_tokenizer(g):
    tokens = byte_chars()
    for m in BPE_MERGES:
        tokens.append(m.replace(" ", ""))
    tokens.append("<|endoftext|>")
    types = [1] * (len(tokens) - 1) + [3]
    g.set("tokenizer.ggml.model", STR, "gpt2")
    g.set("tokenizer.ggml.pre", STR, "gpt-2")
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.set("tokenizer.ggml.token_type", ARR, (I32, types))
    g.set("tokenizer.ggml.merges", ARR, (STR, BPE_MERGES))
    g.set("tokenizer.ggml.eos_token_id", U32, len(tokens) - 1)
    g.set("tokenizer.ggml.bos_token_id", U32, len(tokens) - 1)
    return len(tokens)


def spm_tokenizer(g):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["\u2581", "\u2581h", "e", "l", "o", "\u2581w", "r", "d", "ll", "\u2581he", "\u2581hello",
              "\u2581world", "or", "\u2581wor"]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    g.set("tokenizer.ggml.model", STR, "llama")
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.set("tokenizer.ggml.token_type", ARR, (I32, types))
    g.set("tokenizer.ggml.scores", ARR, (F32, scores))
    g.set("tokenizer.ggml.bos_token_id", U32, 1)
    g.set("tokenizer.ggml.eos_token_id", U32, 2)
    g.set("tokenizer.ggml.unknown_token_id", U32, 0)
    return len(tokens)


# --- models ---

DIM, HEADS, KV_HEADS, FFN, LAYERS, CTX = 256, 4, 2, 512, 1, 128
SCALE = 0.05


def ternary(rng, ttype, rows, cols):
    trits = [rng.choice((-1, 0, 1)) for _ in range(rows * cols)]
    if ttype == T_I2_S:
        return i2_s(trits, SCALE)
    blocks = [SCALE] * (rows * cols // 256)
    return (tq2_0 if ttype == T_TQ2_0 else tq1_0)(trits, blocks)


def model(arch="nanochat", tokenizer="bpe", streams=1, ttype=T_TQ2_0, seed=1):
    rng = random.Random(seed)
    g = Gguf()
    g.set("general.architecture", STR, arch)
    g.set("general.name", STR, f"hostile-{arch}")
    vocab = (bpe_tokenizer if tokenizer == "bpe" else spm_tokenizer)(g)
    p = arch + "."
    for key, v in [("context_length", CTX), ("embedding_length", DIM), ("block_count", LAYERS),
                   ("feed_forward_length", FFN), ("attention.head_count", HEADS),
                   ("attention.head_count_kv", KV_HEADS), ("vocab_size", vocab)]:
        g.set(p + key, U32, v)
    g.set(p + "attention.layer_norm_rms_epsilon", F32, 1e-5)
    g.set(p + "rope.freq_base", F32, 10000.0)
    if arch == "nanochat":
        g.set("nanochat.mhc.n_streams", U32, streams)
    sub_norms = arch.startswith("bitnet")
    kv_dim = DIM // HEADS * KV_HEADS

    def add(name, dims, tt, blob):
        g.tensors[name] = [dims, tt, blob]

    add("token_embd.weight", [DIM, vocab], T_F32, f32s([rng.uniform(-1, 1) for _ in range(DIM * vocab)]))
    for layer in range(LAYERS):
        b = f"blk.{layer}."
        add(b + "attn_norm.weight", [DIM], T_F32, f32s([1.0] * DIM))
        add(b + "ffn_norm.weight", [DIM], T_F32, f32s([1.0] * DIM))
        for part, rows, cols in [("attn_q", DIM, DIM), ("attn_k", kv_dim, DIM), ("attn_v", kv_dim, DIM),
                                 ("attn_output", DIM, DIM), ("ffn_gate", FFN, DIM), ("ffn_up", FFN, DIM),
                                 ("ffn_down", DIM, FFN)]:
            add(b + part + ".weight", [cols, rows], ttype, ternary(rng, ttype, rows, cols))
        if sub_norms:
            add(b + "attn_sub_norm.weight", [DIM], T_F32, f32s([1.0] * DIM))
            add(b + "ffn_sub_norm.weight", [FFN], T_F32, f32s([1.0] * FFN))
        if streams > 1:
            for part in ("attn_mhc", "ffn_mhc"):
                add(b + part + ".weight", [5], T_F32, f32s([0.5, 0.5, 1.0, 1.0, 0.0]))
    add("output_norm.weight", [DIM], T_F32, f32s([1.0] * DIM))
    if not sub_norms:  # bitnet: the head is tied to the embedding
        add("output.weight", [DIM, vocab], T_TQ2_0, ternary(rng, T_TQ2_0, vocab, DIM))
    return g


BASES = {
    "nanochat": lambda: model(),
    "mhc2": lambda: model(streams=2),
    "bitnet_i2s": lambda: model(arch="bitnet", ttype=T_I2_S),
    "llama_spm_tq1": lambda: model(arch="llama", tokenizer="spm", ttype=T_TQ1_0),
}

# --- cases ---
# Each case: (name, bytes, must_fail, phrase). must_fail: the commands that must fail ("info",
# "generate", "tokenize"); the others may succeed or fail cleanly. phrase: what the message of
# each command that must fail contains (a regular substring; None: any clean message).

GEN = ("generate",)
GEN_TOK = ("generate", "tokenize")
ALL = ("info", "generate", "tokenize")
cases = []


def case(name, content, must_fail, phrase=None, flags=(), want_rc=1):
    """flags: more arguments for generate; want_rc: the exit code of the commands that must fail
    (1 for a file at fault, 2 for a flag)."""
    if isinstance(content, Gguf):
        content = content.serialize()
    cases.append((name, content, must_fail, phrase, list(flags), want_rc))


def variant(base="nanochat"):
    return BASES_BUILT[base].copy()


def set_block_scale(g, tensor, value, block=0, raw=None):
    """Overwrites the fp16 scale of one TQ2_0 / TQ1_0 block of `tensor`."""
    dims, ttype, blob = g.tensors[tensor]
    size = 66 if ttype == T_TQ2_0 else 54
    blob = bytearray(blob)
    blob[block * size + size - 2:block * size + size] = raw if raw is not None else fp16(value)
    g.tensors[tensor][2] = bytes(blob)
    return g


def set_i2s_scale(g, tensor, value):
    dims, _, blob = g.tensors[tensor]
    n = dims[0] * dims[1]
    blob = bytearray(blob)
    blob[n // 4:n // 4 + 4] = struct.pack("<f", value)
    g.tensors[tensor][2] = bytes(blob)
    return g


def set_floats(g, tensor, index, value):
    blob = bytearray(g.tensors[tensor][2])
    blob[4 * index:4 * index + 4] = struct.pack("<f", value)
    g.tensors[tensor][2] = bytes(blob)
    return g


def structure_cases():
    good = variant().serialize()
    case("struct.empty", b"", ALL, "too short")
    case("struct.magic", b"GGUX" + good[4:], ALL, "bad magic")
    case("struct.version1", good[:4] + struct.pack("<I", 1) + good[8:], ALL, "version 1")
    case("struct.version99", good[:4] + struct.pack("<I", 99) + good[8:], ALL, "version 99")
    case("struct.big_endian", good[:4] + struct.pack(">I", 3) + good[8:], ALL, "big-endian")
    for cut in (6, 20, 100, 2000, len(good) // 2, len(good) - 1):
        case(f"struct.truncated_{cut}", good[:cut], ALL)
    case("struct.tensor_count_huge", good[:8] + struct.pack("<Q", 1 << 62) + good[16:], ALL, "tensors")
    case("struct.kv_count_huge", good[:16] + struct.pack("<Q", 1 << 62) + good[24:], ALL, "metadata entries")
    case("struct.kv_count_short", good[:16] + struct.pack("<Q", 3) + good[24:], ALL)
    case("struct.tensor_count_zero", good[:8] + struct.pack("<Q", 0) + good[16:], GEN, "missing")
    case("struct.garbage_tail", good + os.urandom(1000), ())
    g = variant()
    g.set_raw("zz.huge_string", STR, struct.pack("<Q", 1 << 62))
    case("struct.string_length_huge", g, ALL, "claims a length")
    g = variant()
    g.set_raw("zz.huge_array", ARR, struct.pack("<IQ", U32, 1 << 61))
    case("struct.array_length_huge", g, ALL, "array claims")
    g = variant()
    g.set_raw("zz.deep", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U8, 0))
    case("struct.arrays_nested_deep", g, ALL, "nested")
    g = variant()
    g.set_raw("zz.type", 13, struct.pack("<I", 0))
    case("struct.unknown_value_type", g, ALL, "unknown type")
    g = variant()
    g.set_raw("zz.bool", BOOL, b"\x05")
    case("struct.bool_5", g, ALL, "bool")
    g = variant()
    g.alignment = 32
    g.set("general.alignment", U32, 48)
    case("struct.alignment_48", g, ALL, "alignment")
    g = variant()
    g.set("general.alignment", STR, "32")
    case("struct.alignment_string", g, ALL, "alignment")
    g = variant()
    g.set("general.architecture", U32, 7)
    case("struct.architecture_int", g, ALL, "general.architecture")
    g = variant()
    g.tensors["token_embd.weight"][1] = 200
    case("struct.tensor_type_unknown", g, ALL, "type id 200")
    g = variant()
    g.tensors["token_embd.weight"][1] = 10  # Q2_K: ggml's, not one nanochat runs
    case("struct.tensor_type_q2_k", g, GEN, "Q2_K")
    g = variant()
    g.tensors["blk.0.attn_q.weight"][1] = 2  # Q4_0: read for embeddings and heads, not layers
    case("struct.layer_type_q4_0", g, GEN, "attn_q")
    g = variant()
    g.tensors["blk.0.attn_q.weight"][0] = [DIM, 1 << 62]
    case("struct.tensor_dims_overflow", g, ALL, "attn_q")
    g = variant()
    g.tensors["blk.0.attn_q.weight"][0] = [DIM, DIM, 1, 1, 1]
    case("struct.tensor_5_dims", g, ALL, "dimensions")
    g = variant()
    g.tensors["blk.0.attn_q.weight"][0] = [100, DIM]
    case("struct.tensor_partial_block", g, ALL, "blocks")
    g = variant()
    g.tensors["blk.0.attn_q.weight"][0] = [DIM, 0]
    case("struct.tensor_dim_zero", g, GEN, "attn_q")
    g = variant()
    g.tensors["output_norm.weight"][2] = b""
    case("struct.tensor_past_end", g.serialize()[:-1024], ALL)


def metadata_type_cases():
    p = "nanochat."
    for key, vtype, value, must in [
        ("tokenizer.ggml.tokens", ARR, (I32, list(range(271))), GEN_TOK),
        ("tokenizer.ggml.tokens", ARR, (ARR, [(U8, [1])] * 271), GEN_TOK),
        ("tokenizer.ggml.tokens", STR, "hello", GEN_TOK),
        ("tokenizer.ggml.tokens", ARR, (STR, []), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (STR, ["1"] * 271), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (ARR, [(I32, [1])] * 271), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (F32, [1.0] * 271), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (BOOL, [True] * 271), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (I32, [1] * 270), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (I32, [1] * 270 + [99]), GEN_TOK),
        ("tokenizer.ggml.token_type", ARR, (I32, [-1] * 271), GEN_TOK),
        ("tokenizer.ggml.token_type", U32, 1, GEN_TOK),
        ("tokenizer.ggml.scores", ARR, (STR, ["0"] * 271), GEN_TOK),
        ("tokenizer.ggml.scores", ARR, (ARR, [(F32, [0.0])] * 271), GEN_TOK),
        ("tokenizer.ggml.scores", ARR, (BOOL, [False] * 271), GEN_TOK),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0] * 3), GEN_TOK),
        ("tokenizer.ggml.scores", ARR, (F32, [math.nan] * 271), GEN_TOK),
        ("tokenizer.ggml.merges", ARR, (I32, [1] * 14), GEN_TOK),
        ("tokenizer.ggml.merges", ARR, (ARR, [(STR, ["h", "e"])] * 14), GEN_TOK),
        ("tokenizer.ggml.merges", STR, "h e", GEN_TOK),
        ("tokenizer.ggml.model", U32, 2, GEN_TOK),
        ("tokenizer.ggml.model", ARR, (STR, ["gpt2"]), GEN_TOK),
        ("tokenizer.ggml.pre", F32, 1.0, GEN_TOK),
        ("tokenizer.ggml.bos_token_id", STR, "1", GEN_TOK),
        ("tokenizer.ggml.eos_token_id", F32, 1.0, GEN_TOK),
        ("tokenizer.ggml.add_bos_token", U32, 1, GEN_TOK),
        ("tokenizer.chat_template", U32, 1, ()),
        (p + "context_length", STR, "128", GEN),
        (p + "context_length", F32, 128.0, GEN),
        (p + "context_length", ARR, (U32, [128]), GEN),
        (p + "embedding_length", BOOL, True, GEN),
        (p + "block_count", F64, 1.0, GEN),
        (p + "attention.layer_norm_rms_epsilon", STR, "1e-5", GEN),
        (p + "rope.freq_base", ARR, (F32, [1e4]), GEN),
        ("nanochat.mhc.n_streams", STR, "1", GEN),
        ("nanochat.sub_norms", U32, 1, GEN),
        ("nanochat.ffn_activation", U32, 0, GEN),
    ]:
        g = variant()
        g.set(key, vtype, value)
        etype = value[0] if vtype == ARR else None
        label = f"{key}.{'arr_' + str(etype) if vtype == ARR else 'type_' + str(vtype)}"
        n = len(value[1]) if vtype == ARR else 0
        case(f"types.{label}_{n}", g, must, key)
    # SentencePiece scores and token types in the other tokenizer.
    for key, value in [("tokenizer.ggml.scores", (STR, ["x"] * 273)),
                       ("tokenizer.ggml.scores", (ARR, [(F32, [0.0])] * 273)),
                       ("tokenizer.ggml.token_type", (STR, ["6"] * 273))]:
        g = variant("llama_spm_tq1")
        g.set(key, ARR, value)
        case(f"types.spm.{key}.arr_{value[0]}", g, GEN_TOK, key)


def hyperparameter_cases():
    for base, p in (("nanochat", "nanochat."), ("llama_spm_tq1", "llama.")):
        for key, vtype, value, phrase in [
            ("context_length", U64, 1 << 56, "context_length"),
            ("context_length", U64, (1 << 63) - 1, "context_length"),
            ("context_length", U64, (1 << 64) - 1, "context_length"),
            ("context_length", I64, -1, "context_length"),
            ("context_length", U32, 0, "context_length"),
            ("context_length", U64, 1 << 40, "context_length"),
            ("embedding_length", U64, 1 << 62, "embedding_length"),
            ("embedding_length", U32, 0, "embedding_length"),
            ("block_count", U64, 1 << 40, "block_count"),
            ("block_count", I32, -3, "block_count"),
            ("attention.head_count", U32, 0, "head_count"),
            ("attention.head_count", U32, 3, "heads"),
            ("attention.head_count", U64, 1 << 33, "head_count"),
            ("attention.head_count_kv", U32, 3, "key/value heads"),
            ("attention.head_count_kv", U32, 8, "key/value heads"),
            ("feed_forward_length", U64, (1 << 64) - 1, "feed_forward_length"),
            ("vocab_size", U32, 1 << 31, "vocab_size"),
            ("vocab_size", U32, 100, "token_embd"),
            ("attention.layer_norm_rms_epsilon", F32, math.inf, "layer_norm_rms_epsilon"),
            ("attention.layer_norm_rms_epsilon", F32, math.nan, "layer_norm_rms_epsilon"),
            ("attention.layer_norm_rms_epsilon", F32, -1e-5, "layer_norm_rms_epsilon"),
            ("attention.layer_norm_rms_epsilon", F64, 1e300, "layer_norm_rms_epsilon"),
            ("attention.layer_norm_rms_epsilon", F64, 1e-300, "layer_norm_rms_epsilon"),
            ("rope.freq_base", F32, math.inf, "rope.freq_base"),
            ("rope.freq_base", F32, -math.inf, "rope.freq_base"),
            ("rope.freq_base", F32, math.nan, "rope.freq_base"),
            ("rope.freq_base", F32, 0.0, "rope.freq_base"),
            ("rope.freq_base", F64, 1e300, "rope.freq_base"),
            ("rope.dimension_count", U32, 7, "rope.dimension_count"),
        ]:
            g = variant(base)
            g.set(p + key, vtype, value)
            case(f"hparams.{base}.{key}={value}", g, GEN, phrase)
    for value, vtype in [((1 << 32) + 1, U64), ((1 << 32) + 2, U64), (3, U32), (0, U32), (-1, I32),
                         ((1 << 64) - 1, U64)]:
        g = variant()
        g.set("nanochat.mhc.n_streams", vtype, value)
        case(f"hparams.mhc.n_streams={value}", g, GEN, "n_streams")
    g = variant()
    g.set("nanochat.ffn_activation", STR, "gelu")
    case("hparams.ffn_activation_gelu", g, GEN, "ffn_activation")
    g = variant("nanochat")
    g.set("nanochat.rope.scaling.type", STR, "yarn")
    case("hparams.rope_scaling_yarn", g, GEN, "rope.scaling.type")
    g = variant()
    g.set("general.architecture", STR, "gpt-neox")
    case("hparams.architecture_unknown", g, GEN, "gpt-neox")
    g = variant()
    g.drop("nanochat.embedding_length")
    case("hparams.missing_embedding_length", g, GEN, "embedding_length")


def tensor_value_cases():
    q = "blk.0.attn_q.weight"
    for value in (math.inf, -math.inf, math.nan, -0.05, 0.0):
        g = set_block_scale(variant(), q, value)
        case(f"values.tq2_0_scale={value}", g, GEN, "attn_q")
        g = set_block_scale(variant("llama_spm_tq1"), q, value)
        case(f"values.tq1_0_scale={value}", g, GEN, "attn_q")
    g = set_block_scale(variant(), "output.weight", math.nan, block=3)
    case("values.tq2_0_head_scale_nan", g, GEN, "NaN")
    g = set_block_scale(variant(), "blk.0.ffn_down.weight", 0.07, block=1)
    case("values.tq2_0_scales_differ", g, GEN, "ffn_down.*different scales")
    g = variant()
    blob = bytearray(g.tensors[q][2])
    blob[5] = 0xFF  # four codes 3
    g.tensors[q][2] = bytes(blob)
    case("values.tq2_0_code_3", g, GEN, "attn_q.*code 3")
    for value in (math.inf, math.nan, -0.05, 0.0, -math.inf):
        g = set_i2s_scale(variant("bitnet_i2s"), q, value)
        case(f"values.i2_s_scale={value}", g, GEN, "attn_q")
    g = variant("bitnet_i2s")
    blob = bytearray(g.tensors[q][2])
    blob[7] = 0xFF
    g.tensors[q][2] = bytes(blob)
    case("values.i2_s_code_3", g, GEN, "attn_q.*code 3")
    for tensor, base in [("blk.0.attn_norm.weight", "nanochat"), ("blk.0.ffn_norm.weight", "nanochat"),
                         ("output_norm.weight", "nanochat"), ("blk.0.attn_sub_norm.weight", "bitnet_i2s"),
                         ("blk.0.ffn_sub_norm.weight", "bitnet_i2s"), ("blk.0.attn_mhc.weight", "mhc2")]:
        for value in (math.nan, math.inf):
            g = set_floats(variant(base), tensor, 3, value)
            case(f"values.{tensor}={value}", g, GEN, tensor.replace(".", r"\."))
    g = variant("bitnet_i2s")
    g.tensors["blk.0.attn_q.scale"] = [[1], T_F32, f32s([math.nan])]
    case("values.layer_scale_nan", g, GEN, "attn_q.scale")
    g = variant()
    g.tensors["blk.0.attn_q.scale"] = [[2], T_F32, f32s([1.0, 1.0])]
    case("values.layer_scale_two_values", g, GEN, "attn_q.scale")
    g = variant()
    g.tensors[q][1] = T_F32
    g.tensors[q][2] = f32s([0.0] * (DIM * DIM))
    case("values.ternary_layer_f32", g, GEN, "attn_q")
    g = variant()
    del g.tensors["blk.0.ffn_down.weight"]
    case("values.missing_ffn_down", g, GEN, "ffn_down")
    g = variant()
    g.tensors["token_embd.weight"][0] = [DIM, 100]
    g.tensors["token_embd.weight"][2] = g.tensors["token_embd.weight"][2][:DIM * 100 * 4]
    case("values.embedding_shape", g, GEN, "token_embd")
    g = variant()
    g.tensors["token_embd.weight"][1] = T_TQ2_0
    g.tensors["token_embd.weight"][2] = ternary(random.Random(5), T_TQ2_0, 271, DIM)
    case("values.embedding_ternary", g, GEN, "token_embd")
    g = variant()
    g.tensors["output.weight"][1] = T_Q8_0
    g.tensors["output.weight"][2] = (fp16(math.nan) + bytes(32)) * (271 * DIM // 32)
    case("values.q8_0_head_nan", g, GEN, "output.weight")
    g = variant()
    g.tensors["token_embd.weight"][2] = f32s([math.nan] * (DIM * 271))
    case("values.embedding_nan", g, GEN, "token_embd")
    g = variant()
    g.tensors["blk.0.attn_norm.weight"][1] = T_F16
    g.tensors["blk.0.attn_norm.weight"][2] = fp16(math.inf) * DIM
    case("values.norm_f16_inf", g, GEN, "attn_norm")


def tokenizer_cases():
    g = variant()
    g.set("tokenizer.ggml.model", STR, "bert")
    case("tok.model_bert", g, GEN_TOK, "bert")
    g = variant()
    g.drop("tokenizer.ggml.model")
    case("tok.model_missing", g, GEN_TOK, "tokenizer")
    g = variant()
    g.drop("tokenizer.ggml.merges")
    case("tok.merges_missing", g, GEN_TOK, "merges")
    g = variant()
    g.set("tokenizer.ggml.merges", ARR, (STR, ["nospace"]))
    case("tok.merge_without_space", g, GEN_TOK, "merge 0")
    g = variant()
    g.set("tokenizer.ggml.pre", STR, "no-such-pre")
    case("tok.pre_unknown", g, GEN_TOK, "no-such-pre")
    for key, value in [("bos", -1), ("bos", 271), ("eos", 1 << 40), ("unknown", 100000)]:
        g = variant()
        g.set(f"tokenizer.ggml.{key}_token_id", I64, value)
        case(f"tok.{key}_id={value}", g, GEN_TOK, f"{key}")
    g = variant("llama_spm_tq1")
    tokens = ["<unk>", "<s>", "</s>", "a"]
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.set("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1]))
    g.set("tokenizer.ggml.scores", ARR, (F32, [0.0] * 4))
    case("tok.spm_no_byte_tokens", g, GEN_TOK, "byte token")
    # Odd contents that are not errors: must not crash, whatever they give.
    g = variant()
    tokens = byte_chars() + [""] * 14 + ["<|endoftext|>"]
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    case("tok.empty_tokens", g, ())
    g = variant()
    tokens = byte_chars() + ["he"] * 14 + ["<|endoftext|>"]
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    case("tok.duplicate_tokens", g, ())
    g = variant()
    tokens = byte_chars() + [b"\xff\xfe".decode("latin1")] * 14 + ["<|endoftext|>"]
    g.set("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.set_raw("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 271) + b"".join(
        gstr(t.encode() if i < 256 or i == 270 else b"\xff\xfe\x80") for i, t in enumerate(tokens)))
    case("tok.invalid_utf8_tokens", g, ())
    g = variant()
    g.set("tokenizer.ggml.token_type", ARR, (I32, [3] * 271))
    case("tok.all_control", g, ())
    g = variant()
    g.set("tokenizer.ggml.merges", ARR, (STR, ["x y"] * 1000 + [" "]))
    case("tok.merges_unknown_tokens", g, ())
    g = variant()
    g.set("tokenizer.ggml.tokens", ARR, (STR, byte_chars() + ["x" * 100000] * 14 + ["<|endoftext|>"]))
    case("tok.long_tokens", g, ())
    g = variant("llama_spm_tq1")
    g.set("tokenizer.ggml.scores", ARR, (F32, [math.inf] * 273))
    case("tok.spm_scores_inf", g, ())
    g = variant()
    g.set("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content" * 50)
    case("tok.chat_template_garbage", g, ())


def flag_cases():
    """Sizes from flags rather than the file: the same checks, exit 2, named as the flag."""
    good = variant()
    for value in (1 << 56, (1 << 63) - 1, 1 << 40, (1 << 24) + 1):
        case(f"flags.c={value}", good, GEN, f"^nanochat: -c {value}: .*KV cache would need", ["-c", str(value)], 2)
    case("flags.c=-3", good, GEN, "^nanochat: -c", ["-c", "-3"], 2)
    case("flags.c=1e99", good, GEN, "^nanochat: ", ["-c", "1" + "0" * 30], 2)
    case("flags.n=2^63", good, GEN, "^nanochat: ", ["-n", str(1 << 63)], 2)


def run(cmd, env, sanitized):
    def limit():
        if not sanitized:  # ASan reserves terabytes of shadow address space up front
            resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        p = subprocess.run(cmd, capture_output=True, env=env, timeout=TIMEOUT_S * (5 if sanitized else 1),
                           preexec_fn=limit, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, b"", b""
    return p.returncode, p.stdout, p.stderr


def check_case(binary, work, env, sanitized, item):
    index, (name, content, must_fail, phrase, flags, want_rc) = item
    path = os.path.join(work, f"case-{index}.gguf")
    with open(path, "wb") as f:
        f.write(content)
    problems = []
    commands = {
        "info": [binary, "info", "-m", path],
        "generate": [binary, "generate", "-m", path, "-p", "hello world", "-n", "3", "--temp", "0",
                     "-t", "1", "--autotune", "off"] + flags,
        "tokenize": [binary, "tokenize", "-m", path, "-p", "hello world the"],
    }
    outcome, messages = [], []
    for command, cmd in commands.items():
        rc, out, err = run(cmd, env, sanitized)
        lines = err.decode(errors="replace").splitlines()
        if rc is None:
            problems.append(f"{command}: timed out after {TIMEOUT_S} s")
        elif rc < 0:
            problems.append(f"{command}: killed by signal {-rc}: {err.decode(errors='replace')[-300:]}")
        elif rc == 0:
            if command in must_fail:
                problems.append(f"{command}: exit 0, expected a failure")
            outcome.append(f"{command}=ok")
        else:
            outcome.append(f"{command}={rc}")
            messages.append(f"{command}: {lines[0] if lines else ''}")
            if rc not in (1, 2) or (command in must_fail and rc != want_rc):
                problems.append(f"{command}: exit {rc}" + (f", not {want_rc}" if command in must_fail else ""))
            if len(lines) != 1 or not lines[0].startswith("nanochat: "):
                problems.append(f"{command}: {len(lines)} lines on stderr: {lines[:4]}")
            if out:
                problems.append(f"{command}: wrote to stdout on failure")
            if phrase and command in must_fail and lines and not re.search(phrase, lines[0]):
                problems.append(f"{command}: message lacks /{phrase}/: {lines[0]}")
    os.remove(path)
    return name, problems, outcome, messages


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    binary = os.path.abspath(args[0])
    only = args[args.index("-k") + 1] if "-k" in args else None
    verbose = "-v" in args
    with open(binary, "rb") as f:
        sanitized = b"__asan_init" in f.read()
    global BASES_BUILT
    BASES_BUILT = {name: make() for name, make in BASES.items()}
    for name, g in BASES_BUILT.items():
        case(f"base.{name}", g, ())
    structure_cases()
    metadata_type_cases()
    hyperparameter_cases()
    tensor_value_cases()
    tokenizer_cases()
    flag_cases()
    selected = [c for c in cases if only is None or only in c[0]]
    with tempfile.TemporaryDirectory() as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCHAT_")}
        env["NANOCHAT_CACHE"] = os.path.join(work, "cache")
        failures = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for name, problems, outcome, message in pool.map(
                    lambda c: check_case(binary, work, env, sanitized, c), enumerate(selected)):
                if name.startswith("base.") and any(not o.endswith("=ok") for o in outcome):
                    problems.append(f"a valid base file failed: {outcome} {message}")
                if problems:
                    failures += 1
                    print(f"FAIL {name}:", *problems, sep="\n  ")
                elif verbose:
                    print(f"ok   {name}: {' '.join(outcome)}", *message, sep="\n    ")
    print(f"hostile_gguf: {len(selected)} cases, {len(selected) - failures} passed, {failures} failed")
    sys.exit(1 if failures or not selected else 0)


BASES_BUILT = {}

if __name__ == "__main__":
    main()
