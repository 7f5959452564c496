"""A p4p (pvxs) server for the client interop tests.

Usage: p4p_server.py PREFIX

Serves the PVs below under PREFIX, prints READY when up, and reads commands on stdin:
  count NAME N   post 1..N to PREFIX+NAME as fast as possible, then print DONE
Exits when stdin closes, or after 120 s.
"""
import sys

from p4p.nt import NTScalar, NTEnum, NTTable, NTNDArray
from p4p.server import Server
from p4p.server.thread import SharedPV
from p4p import Type, Value
import numpy

from stdin_server import commands

prefix = sys.argv[1]

SCALARS = {
    "bool": ("?", True),
    "byte": ("b", -8),
    "short": ("h", -16),
    "int": ("i", -32),
    "long": ("l", -64),
    "ubyte": ("B", 8),
    "ushort": ("H", 16),
    "uint": ("I", 32),
    "ulong": ("L", 64),
    "float": ("f", 1.5),
    "double": ("d", 2.25),
    "string": ("s", "hello"),
}


class Writable:
    """Accept every put and post it."""

    def put(self, pv, op):
        pv.post(op.value())
        op.done()


class Adder:
    """RPC: add the arguments a and b."""

    def rpc(self, pv, op):
        args = op.value()
        try:
            query = args.query
        except AttributeError:
            query = args
        total = float(query.a) + float(query.b)
        op.done(NTScalar("d").wrap(total))


pvs = {}
for name, (code, initial) in SCALARS.items():
    pvs[name] = SharedPV(nt=NTScalar(code), initial=initial, handler=Writable())
    arr = [initial, initial] if code != "?" else [True, False]
    pvs["arr_" + name] = SharedPV(nt=NTScalar("a" + code), initial=arr, handler=Writable())

pvs["enum"] = SharedPV(nt=NTEnum(), initial={"index": 1, "choices": ["Off", "On", "Auto"]}, handler=Writable())
table = NTTable(columns=[("name", "s"), ("x", "d"), ("n", "i")])
# Held as plain Values so that partial puts are posted as they come.
pvs["table"] = SharedPV(
    initial=table.wrap([{"name": "a", "x": 1.0, "n": 1}, {"name": "b", "x": 2.0, "n": 2}]),
    handler=Writable(),
)
image = numpy.arange(64 * 32, dtype=numpy.uint16).reshape((32, 64))
pvs["image"] = SharedPV(initial=NTNDArray().wrap(image), handler=Writable())

nested_type = Type(
    [
        ("u", ("U", None, [("i", "i"), ("s", "s")])),
        ("a", "v"),
        ("sa", ("aS", None, [("x", "d"), ("y", "s")])),
        ("inner", ("S", "inner_t", [("level", "i"), ("deeper", ("S", None, [("flag", "?")]))])),
    ],
    id="nested_t",
)
nested = Value(
    nested_type,
    {
        "u": ("s", "selected"),
        "a": 42.5,
        "sa": [{"x": 1.0, "y": "one"}, {"x": 2.0, "y": "two"}],
        "inner": {"level": 3, "deeper": {"flag": True}},
    },
)
pvs["nested"] = SharedPV(initial=nested, handler=Writable())
pvs["counter"] = SharedPV(nt=NTScalar("l"), initial=0, handler=Writable())
pvs["add"] = SharedPV(initial=0.0, nt=NTScalar("d"), handler=Adder())

server = Server(providers=[{prefix + k: v for k, v in pvs.items()}])
for parts in commands(server):
    if len(parts) == 3 and parts[0] == "count":
        pv = pvs[parts[1]]
        for i in range(1, int(parts[2]) + 1):
            pv.post(i)
        print("DONE", flush=True)
