"""A p4p (pvxs) NTNDArray server playing an area detector whose frame counter (uniqueId, an
int32 like areaDetector's ArrayCounter) keeps counting from acquisition to acquisition.

Usage: p4p_detector.py PV [FIRST_ID]

Serves PV (16x8 uint16 frames), holding frame FIRST_ID-1 (the last frame of an earlier run) until
told otherwise, prints READY, and reads commands on stdin, one a line:
  run N FPS    publish N frames numbered on from the counter at FPS frames/s (0: at once), then
               print DONE
  skip K       the next K numbers are never published (frames lost at the source)
  set N        the counter goes to N: the next frame is N (a reset, or a jump to near 2^31-1)
Exits when stdin closes, or after 120 s.
"""
import sys
import time

import numpy
from p4p.nt import NTNDArray
from p4p.server import Server
from p4p.server.thread import SharedPV
from stdin_server import commands

name = sys.argv[1]
counter = int(sys.argv[2]) if len(sys.argv) > 2 else 1
nt = NTNDArray()


def wrap(n):
    """n as an int32 counter holds it: past 2^31-1 it goes on at -2^31."""
    return (n + 2**31) % 2**32 - 2**31


def frame(uid):
    pixels = (numpy.arange(16 * 8, dtype=numpy.uint16) + uid % 1000).reshape((8, 16))
    value = nt.wrap(pixels)
    value["uniqueId"] = uid
    return value


# Plain Values, posted as they are.
pv = SharedPV(initial=frame(wrap(counter - 1)))
server = Server(providers=[{name: pv}])
for parts in commands(server):
    if parts[0] == "run":
        count, fps = int(parts[1]), float(parts[2])
        start = time.time()
        for k in range(count):
            if fps > 0:
                due = start + k / fps
                time.sleep(max(0.0, due - time.time()))
            pv.post(frame(wrap(counter)))
            counter = wrap(counter + 1)
        print("DONE", flush=True)
    elif parts[0] == "skip":
        counter = wrap(counter + int(parts[1]))
    elif parts[0] == "set":
        counter = wrap(int(parts[1]))
