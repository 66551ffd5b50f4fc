#!/usr/bin/env python3
"""Writes the committed set of malformed GGUF files and manifest.json, which maps each file to
a phrase its error message must contain. Each file is a small valid file with one thing broken.
Run from anywhere: python3 tests/data/gguf/make_malformed.py"""
import json
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "malformed")


def s(text):
    b = text if isinstance(text, bytes) else text.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def tensor(name, dims, ttype, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<II", ttype, 0)[:4] + struct.pack("<Q", offset)


def gguf(kvs, tensors, data=b"", version=3, magic=b"GGUF", counts=None, align=32):
    n_t, n_kv = counts if counts else (len(tensors), len(kvs))
    head = magic + struct.pack("<IQQ", version, n_t, n_kv) + b"".join(kvs) + b"".join(tensors)
    pad = (-len(head)) % align
    return head + b"\0" * pad + data


ARCH = kv("general.architecture", 8, s("llama"))
F32_4 = tensor("w", [4], 0, 0)
cases = {}


def case(name, phrase, content):
    cases[name] = (phrase, content)


good = gguf([ARCH], [F32_4], b"\0" * 16)
case("empty.gguf", "too short", b"")
case("truncated_header.gguf", "truncated", good[:10])
case("bad_magic.gguf", "bad magic", b"GGUX" + good[4:])
case("version1.gguf", "version 1 is no longer supported", gguf([ARCH], [F32_4], b"\0" * 16, version=1))
case("big_endian.gguf", "big-endian", gguf([ARCH], [F32_4], b"\0" * 16, version=0x03000000))
case("huge_kv_count.gguf", "metadata entries", gguf([ARCH], [F32_4], b"\0" * 16, counts=(1, 1 << 60)))
case("huge_tensor_count.gguf", "tensors but the file has room", gguf([ARCH], [F32_4], b"\0" * 16, counts=(1 << 40, 1)))
case("string_past_end.gguf", "needs", gguf([kv("general.architecture", 8, struct.pack("<Q", 1 << 20) + b"llama")], []))
case("huge_string_length.gguf", "claims a length", gguf([kv("general.architecture", 8, struct.pack("<Q", 1 << 62))], []))
case("huge_array.gguf", "array claims", gguf([kv("a", 9, struct.pack("<IQ", 4, 1 << 50))], []))
case("huge_string_array.gguf", "array claims", gguf([kv("a", 9, struct.pack("<IQ", 8, 1 << 40))], []))
case("nested_arrays.gguf", "nested", gguf([kv("a", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 0))], []))
case("invalid_utf8_key.gguf", "not valid UTF-8", gguf([kv("bad\xff".encode("latin1"), 4, struct.pack("<I", 1))], []))
case("overlong_utf8_key.gguf", "not valid UTF-8", gguf([kv(b"k\xc0\xaf", 4, struct.pack("<I", 1))], []))
case("duplicate_key.gguf", "appears twice", gguf([kv("k", 4, struct.pack("<I", 1)), kv("k", 4, struct.pack("<I", 2))], []))
case("unknown_value_type.gguf", "unknown type 13", gguf([kv("k", 13, struct.pack("<I", 1))], []))
case("bad_bool.gguf", "a bool holds 7", gguf([kv("k", 7, b"\x07")], []))
case("bad_alignment.gguf", "not a power of two", gguf([ARCH, kv("general.alignment", 4, struct.pack("<I", 24))], [F32_4], b"\0" * 16))
case("alignment_wrong_type.gguf", "must be a uint32", gguf([kv("general.alignment", 8, s("32"))], []))
case("too_many_dims.gguf", "dimensions", gguf([ARCH], [tensor("w", [1, 1, 1, 1, 1], 0, 0)], b"\0" * 16))
case("zero_dims.gguf", "dimensions", gguf([ARCH], [tensor("w", [], 0, 0)], b"\0" * 16))
case("dimension_overflow.gguf", "overflows", gguf([ARCH], [tensor("w", [1 << 40, 1 << 40], 0, 0)], b"\0" * 16))
case("unknown_tensor_type.gguf", "type id 77", gguf([ARCH], [tensor("w", [4], 77, 0)], b"\0" * 16))
case("unsupported_tensor_type.gguf", "Q2_K", gguf([ARCH], [tensor("w", [256], 10, 0)], b"\0" * 84))
case("i2s_outside_bitnet.gguf", "outside BitNet", gguf([ARCH], [tensor("w", [128], 36, 0)], b"\0" * 64))
case("partial_block.gguf", "whole number", gguf([ARCH], [tensor("w", [100], 35, 0)], b"\0" * 66))
case("unaligned_offset.gguf", "not a multiple of the alignment", gguf([ARCH], [tensor("w", [4], 0, 8)], b"\0" * 64))
case("data_past_end.gguf", "runs past the end", gguf([ARCH], [tensor("w", [1024], 0, 0)], b"\0" * 16))
case("overlapping_tensors.gguf", "overlap", gguf([ARCH], [tensor("a", [16], 0, 0), tensor("b", [16], 0, 32)], b"\0" * 128))
case("duplicate_tensor.gguf", "appears twice", gguf([ARCH], [tensor("w", [4], 0, 0), tensor("w", [4], 0, 32)], b"\0" * 64))
case("empty_tensor_name.gguf", "empty or non-UTF-8 name", gguf([ARCH], [tensor("", [4], 0, 0)], b"\0" * 16))

os.makedirs(out_dir, exist_ok=True)
for old in os.listdir(out_dir):
    os.remove(os.path.join(out_dir, old))
manifest = {}
for name, (phrase, content) in sorted(cases.items()):
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(content)
    manifest[name] = phrase
with open(os.path.join(here, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"wrote {len(cases)} malformed files")
