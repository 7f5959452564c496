"""A pvapy (pvAccessCPP) client that decompresses NTNDArray frames with pvapy's own
AdImageUtility (the code pvapy's consumers use for areaDetector's codecs).

Usage: pvapy_codec_client.py PV N

Monitors PV, prints READY once subscribed, then for each of the first N frames (uniqueId > 0)
prints one JSON line: {"uniqueId", "codec", "count", "min", "max", "mean", "sum"} of the image
pvapy decompressed. Gives up after 30 s.
"""
import json
import sys
import time

import numpy as np
import pvaccess as pva
from pvapy.utility.adImageUtility import AdImageUtility

pv, want = sys.argv[1], int(sys.argv[2])
ch = pva.Channel(pv)
# A queue read from this thread, not a callback (pvapy 5.6 sometimes calls back without the GIL).
queue = pva.PvObjectQueue()
ch.qMonitor(queue, "field()")
print("READY", flush=True)
seen = 0
deadline = time.monotonic() + 30.0
while seen < want and time.monotonic() < deadline:
    try:
        v = queue.get(min(1.0, max(0.0, deadline - time.monotonic())))
    except pva.QueueEmpty:
        continue
    if v["uniqueId"] <= 0:
        continue
    uid, image = AdImageUtility.reshapeNtNdArray(v)[:2]
    wide = np.asarray(image, dtype=np.float64)
    print(json.dumps({"uniqueId": int(uid), "codec": v["codec"]["name"], "count": int(wide.size),
                      "min": float(wide.min()), "max": float(wide.max()), "mean": float(wide.mean()),
                      "sum": float(wide.sum())}), flush=True)
    seen += 1
ch.stopMonitor()
