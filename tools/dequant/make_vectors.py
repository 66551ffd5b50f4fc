#!/usr/bin/python3
"""Golden vectors for nanochat's dequantization (src/gguf/dequant.cpp), made by an independent
implementation: the `gguf` Python package (gguf-py, from llama.cpp; Debian's python3-gguf in the
sid suite). Run it where python3-gguf is installed, e.g. in a chroot:

    debootstrap --variant=minbase --include=python3-gguf,python3-numpy sid /tmp/sid
    cp tools/dequant/make_vectors.py /tmp/sid/tmp/ && chroot /tmp/sid python3 /tmp/make_vectors.py /tmp/out
    cp /tmp/sid/tmp/out/* tests/data/dequant/

For each type: TYPE.bin holds 8 blocks of seeded random bytes whose fp16 scale fields are set to
finite values (ggml never writes inf or NaN scales), TYPE.f32 the values gguf-py dequantizes them
to (little-endian float32).
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# type: (block bytes, offsets of fp16 scale fields in a block)
TYPES = {
    "Q4_0": (T.Q4_0, 18, [0]),
    "Q4_1": (T.Q4_1, 20, [0, 2]),
    "Q5_0": (T.Q5_0, 22, [0]),
    "Q5_1": (T.Q5_1, 24, [0, 2]),
    "Q8_0": (T.Q8_0, 34, [0]),
    "Q4_K": (T.Q4_K, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 210, [208]),
}
BLOCKS = 8


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    for name, (qtype, size, scale_offsets) in TYPES.items():
        raw = bytearray(rng.integers(0, 256, size=BLOCKS * size, dtype=np.uint8).tobytes())
        for b in range(BLOCKS):
            for off in scale_offsets:
                scale = np.float16(rng.uniform(-0.05, 0.05) if off == 0 or name == "Q6_K"
                                   else rng.uniform(-0.5, 0.5))
                raw[b * size + off:b * size + off + 2] = scale.tobytes()
        data = np.frombuffer(bytes(raw), dtype=np.uint8)
        values = dequantize(data, qtype).astype("<f4")
        open(os.path.join(out, f"{name}.bin"), "wb").write(bytes(raw))
        open(os.path.join(out, f"{name}.f32"), "wb").write(values.tobytes())
        print(name, values.size, "values")


if __name__ == "__main__":
    main(sys.argv[1])
