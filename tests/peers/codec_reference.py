"""The reference compressors of areaDetector's NTNDArray codecs, for the codec interop tests.

Usage:
  codec_reference.py check DIR   decompress every case DIR/manifest.json lists (compressed by
                                 pvabridge) with the references and compare with the raw bytes;
                                 prints one JSON line per case: {"case", "ok", "why"}
  codec_reference.py make DIR    compress images of every NTNDArray element type with the
                                 references, write DIR/<case>.raw and DIR/<case>.packed and
                                 DIR/manifest.json

The references are the PyPI packages pvapy decompresses with: lz4 (lz4.block, no stored size,
as LZ4_compress_default writes it), bitshuffle (compress_lz4 / decompress_lz4 with the default
block size, as bshuf_compress_lz4 writes it) and blosc (python-blosc over c-blosc 1).
"""
import json
import os
import sys

import bitshuffle
import blosc
import lz4.block
import numpy as np

DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def decompress(codec, packed, dtype, count, options):
    dt = np.dtype(dtype)
    if codec == "lz4":
        return lz4.block.decompress(packed, uncompressed_size=count * dt.itemsize)
    if codec == "bslz4":
        arr = bitshuffle.decompress_lz4(np.frombuffer(packed, dtype=np.uint8), (count,), dt)
        return arr.tobytes()
    if codec == "blosc":
        return blosc.decompress(packed)
    raise ValueError(codec)


def check(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        cases = json.load(f)
    for case in cases:
        name = case["case"]
        with open(os.path.join(folder, name + ".raw"), "rb") as f:
            raw = f.read()
        with open(os.path.join(folder, name + ".packed"), "rb") as f:
            packed = f.read()
        try:
            out = decompress(case["codec"], packed, case["dtype"], case["count"], case)
            ok = out == raw
            why = "" if ok else f"{len(out)} bytes differ from the {len(raw)} raw bytes"
        except Exception as ex:  # the reason goes to the test's message
            ok, why = False, f"{type(ex).__name__}: {ex}"
        print(json.dumps({"case": name, "ok": ok, "why": why}), flush=True)


def image(dtype, count, seed, kind):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if kind == "noise":
        return rng.integers(0, 256, size=count * dt.itemsize, dtype=np.uint8).view(dt)
    counts = rng.poisson(10, size=count)
    return counts.astype(dt)


def make(folder):
    cases = []

    def add(name, codec, dtype, data, packed, **extra):
        with open(os.path.join(folder, name + ".raw"), "wb") as f:
            f.write(data.tobytes())
        with open(os.path.join(folder, name + ".packed"), "wb") as f:
            f.write(bytes(packed))
        cases.append(dict(case=name, codec=codec, dtype=dtype, count=int(data.size), **extra))

    for i, dtype in enumerate(DTYPES):
        for kind in ["poisson", "noise"]:
            # Odd counts: a tail past the last multiple of 8 and past a bitshuffle block.
            count = 5000 + 3 * i + (1 if kind == "noise" else 0)
            data = image(dtype, count, i, kind)
            tag = f"{dtype}-{kind}"
            add(f"lz4-{tag}", "lz4", dtype, data, lz4.block.compress(data.tobytes(), store_size=False))
            add(f"bslz4-{tag}", "bslz4", dtype, data, bitshuffle.compress_lz4(data).tobytes())
            for cname in ["blosclz", "lz4", "lz4hc"]:
                for shuffle, sname in [(blosc.NOSHUFFLE, "noshuffle"), (blosc.SHUFFLE, "shuffle"), (blosc.BITSHUFFLE, "bitshuffle")]:
                    packed = blosc.compress(data.tobytes(), typesize=data.itemsize, clevel=5, shuffle=shuffle, cname=cname)
                    add(f"blosc-{cname}-{sname}-{tag}", "blosc", dtype, data, packed)
    # Larger frames: several Blosc blocks, several bitshuffle blocks, split streams.
    big = image("uint16", 300_001, 99, "poisson")
    add("bslz4-uint16-big", "bslz4", "uint16", big, bitshuffle.compress_lz4(big).tobytes())
    for cname in ["blosclz", "lz4"]:
        packed = blosc.compress(big.tobytes(), typesize=2, clevel=9, shuffle=blosc.SHUFFLE, cname=cname)
        add(f"blosc-{cname}-uint16-big", "blosc", "uint16", big, packed)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(cases, f)
    print(json.dumps({"cases": len(cases)}), flush=True)


if __name__ == "__main__":
    {"check": check, "make": make}[sys.argv[1]](sys.argv[2])
