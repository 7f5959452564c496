"""A pvapy (pvAccessCPP) server for the client interop tests.

Usage: pvapy_server.py PREFIX

Serves the PVs below under PREFIX, prints READY when up, and reads commands on stdin:
  count NAME N   update PREFIX+NAME with 1..N, then print DONE
Exits when stdin closes, or after 120 s.
"""
import sys
import threading
import time

import numpy
import pvaccess as pva

prefix = sys.argv[1]

SCALARS = {
    "bool": (pva.BOOLEAN, True),
    "byte": (pva.BYTE, "x"),
    "short": (pva.SHORT, -16),
    "int": (pva.INT, -32),
    "long": (pva.LONG, -64),
    "ubyte": (pva.UBYTE, 8),
    "ushort": (pva.USHORT, 16),
    "uint": (pva.UINT, 32),
    "ulong": (pva.ULONG, 64),
    "float": (pva.FLOAT, 1.5),
    "double": (pva.DOUBLE, 2.25),
    "string": (pva.STRING, "hello"),
}

server = pva.PvaServer()


def add(name, obj):
    server.addRecord(prefix + name, obj)


for name, (t, initial) in SCALARS.items():
    add(name, pva.NtScalar(t, initial))
    arr = [initial, initial] if t != pva.BOOLEAN else [True, False]
    if t == pva.BYTE:
        arr = numpy.array([120, 120], dtype=numpy.int8)
    add("arr_" + name, pva.PvObject({"value": [t]}, {"value": arr}, "epics:nt/NTScalarArray:1.0"))

add("enum", pva.NtEnum(["Off", "On", "Auto"], 1))

table = pva.NtTable([pva.STRING, pva.DOUBLE, pva.INT])
table.setLabels(["name", "x", "n"])
table.setColumn(0, ["a", "b"])
table.setColumn(1, [1.0, 2.0])
table.setColumn(2, [1, 2])
add("table", table)


def image(width, height):
    nd = pva.NtNdArray()
    data = (numpy.arange(width * height) % 65536).astype(numpy.uint16)
    nd["value"] = {"ushortValue": data}
    nd["dimension"] = [
        pva.PvDimension(width, 0, width, 1, False),
        pva.PvDimension(height, 0, height, 1, False),
    ]
    nd["uniqueId"] = 1
    return nd


add("image", image(64, 32))
add("bigimage", image(256, 256))

nested = pva.PvObject(
    {
        "u": ({"i": pva.INT, "s": pva.STRING},),
        "a": (),
        "sa": [{"x": pva.DOUBLE, "y": pva.STRING}],
        "inner": {"level": pva.INT, "deeper": {"flag": pva.BOOLEAN}},
    },
    "nested_t",
)
nested["u"] = pva.PvObject({"s": pva.STRING}, {"s": "selected"})
nested["a"] = pva.PvDouble(42.5)
nested["sa"] = [{"x": 1.0, "y": "one"}, {"x": 2.0, "y": "two"}]
nested["inner.level"] = 3
nested["inner.deeper.flag"] = True
add("nested", nested)
add("counter", pva.NtScalar(pva.LONG, 0))

print("READY", flush=True)

deadline = time.time() + 120


def watchdog():
    while time.time() < deadline:
        time.sleep(0.5)
    import os

    os._exit(0)


threading.Thread(target=watchdog, daemon=True).start()

for line in sys.stdin:
    parts = line.split()
    if len(parts) == 3 and parts[0] == "count":
        for i in range(1, int(parts[2]) + 1):
            server.update(prefix + parts[1], pva.NtScalar(pva.LONG, i))
        print("DONE", flush=True)
