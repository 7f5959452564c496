"""A p4p (pvxs) server publishing NTNDArray frames compressed by the reference compressors (the
PyPI packages lz4, bitshuffle, blosc), laid out as areaDetector's codec plugin lays them out:
the compressed bytes as ubyteValue, codec.name, the uncompressed pvData type code in
codec.parameters, compressedSize and uncompressedSize.

Usage: p4p_codec_server.py PV

Prints READY, waits for a line on stdin, then posts frames uniqueId 1, 2, ...: every NTNDArray
element type compressed with lz4, bslz4 and blosc, then three bad frames (truncated lz4, a
bslz4 block length past the data, truncated blosc). Prints one JSON line per frame with what
its statistics must be (bad frames: {"uniqueId", "bad": reason}), then DONE, and exits when
stdin closes (or after 120 s).
"""
import json
import sys
import threading
import time

import bitshuffle
import blosc
import lz4.block
import numpy as np
from p4p.nt import NTNDArray
from p4p.server import Server
from p4p.server.thread import SharedPV

# numpy dtype -> pvData scalar type code (what areaDetector puts in codec.parameters).
CODES = {
    "int8": 1, "int16": 2, "int32": 3, "int64": 4, "uint8": 5,
    "uint16": 6, "uint32": 7, "uint64": 8, "float32": 9, "float64": 10,
}

pv_name = sys.argv[1]
nt = NTNDArray()
pv = SharedPV(initial=nt.wrap(np.zeros((1, 1), dtype=np.uint16)))


def compress(codec, img):
    raw = img.tobytes()
    if codec == "lz4":
        return lz4.block.compress(raw, store_size=False)
    if codec == "bslz4":
        return bitshuffle.compress_lz4(img.reshape(-1)).tobytes()
    # The plugin's default Blosc compressor: BloscLZ, byte shuffle.
    return blosc.compress(raw, typesize=img.itemsize, clevel=5, shuffle=blosc.SHUFFLE, cname="blosclz")


def frame(uid, img, codec, packed):
    v = nt.wrap(np.zeros(img.shape, dtype=img.dtype))
    v["value"] = ("ubyteValue", np.frombuffer(packed, dtype=np.uint8))
    v["codec.name"] = codec
    v["codec.parameters"] = CODES[img.dtype.name]
    v["compressedSize"] = len(packed)
    v["uncompressedSize"] = img.nbytes
    v["uniqueId"] = uid
    return v


def frames():
    rng = np.random.default_rng(5)
    uid = 0
    for dtype in CODES:
        for codec in ["lz4", "bslz4", "blosc"]:
            uid += 1
            # Detector-like counts, 37x23: odd sizes leave tails past every block.
            img = rng.poisson(10, size=(23, 37)).astype(dtype)
            wide = img.astype(np.float64)
            stats = dict(uniqueId=uid, count=int(img.size), min=float(wide.min()), max=float(wide.max()),
                         mean=float(wide.mean()), sum=float(wide.sum()), codec=codec, dtype=dtype)
            yield frame(uid, img, codec, compress(codec, img)), stats
    img = rng.poisson(10, size=(64, 64)).astype(np.uint16)
    good = {c: compress(c, img) for c in ["lz4", "bslz4", "blosc"]}
    bad_bslz4 = bytearray(good["bslz4"])
    bad_bslz4[0:4] = (0x7FFFFFFF).to_bytes(4, "big")
    for codec, packed, why in [
        ("lz4", good["lz4"][: len(good["lz4"]) // 2], "truncated"),
        ("bslz4", bytes(bad_bslz4), "a block length past the data"),
        ("blosc", good["blosc"][: len(good["blosc"]) - 40], "truncated"),
    ]:
        uid += 1
        yield frame(uid, img, codec, packed), dict(uniqueId=uid, bad=f"{codec}: {why}")


def main():
    with Server(providers=[{pv_name: pv}]):
        print("READY", flush=True)
        if not sys.stdin.readline():
            return
        for value, stats in frames():
            pv.post(value)
            print(json.dumps(stats), flush=True)
            time.sleep(0.02)
        print("DONE", flush=True)
        sys.stdin.read()


threading.Timer(120, lambda: __import__("os")._exit(0)).start()
main()
__import__("os")._exit(0)
