"""Drive a PVA server with the pvapy client (pvAccessCPP) and print one JSON object per op.

Usage: pvapy_client_ops.py OP PV [ARG]... [-- OP PV [ARG]...]...
  get PV [REQUEST]     -> {"op":"get","pv":PV,"value":{...},"type":<its introspection dict>}
  put PV VALUE         -> puts VALUE (JSON) into .value, then {"op":"put","value": read back}
  set PV FIELDS        -> puts FIELDS, a JSON object of dotted paths (see below), into the
                          structure read first, then {"op":"set","pv":PV,"value": read back}
  monitor PV N [REQUEST]
                       -> one {"op":"update","pv":PV,"n":i,"value":...} per update as it
                          arrives, then after N updates
                          {"op":"monitor","pv":PV,"complete":bool,"values":[.value of each]}
  info PV              -> {"op":"info","type": introspection dict}, from a GET_FIELD request
REQUEST is pvRequest text (default 'field()').
Values print in the form p4p's todict() gives, so both peers can be checked alike: a union or
any as the value it holds (null when empty), bytes as numbers, booleans as true/false. In
FIELDS, {"@type": T, "value": V} is V as type T (a scalar type name as pvData spells it, or an
array type "T[]"); with "@union": M added, it selects member M of a union (omit "@union" for
an any). pvapy has no call that shows a structure's type id.
Every wait is bounded; errors print {"error": "..."} and exit 1.
"""
import json
import sys
import time

import numpy as np
import pvaccess as pva
from ops_args import run_ops

TYPES = {
    "boolean": pva.BOOLEAN,
    "byte": pva.BYTE,
    "short": pva.SHORT,
    "int": pva.INT,
    "long": pva.LONG,
    "ubyte": pva.UBYTE,
    "ushort": pva.USHORT,
    "uint": pva.UINT,
    "ulong": pva.ULONG,
    "float": pva.FLOAT,
    "double": pva.DOUBLE,
    "string": pva.STRING,
}


# Seconds one get, put or connection may take. Generous, because a loaded 2-core machine can
# take seconds to connect a channel; a failure still ends well inside the test's own bound.
OP_TIMEOUT = 15.0


def plain(v):
    if isinstance(v, pva.ScalarType):
        return str(v).rsplit(".", 1)[-1]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, pva.PvObject):
        return plain(v.toDict())
    return v


def canonical(d, t):
    """A value from toDict(), walked with its introspection dict `t`, in p4p's todict() form.

    pvapy hands out a union as (member dict, member types), an any the same way with the
    member named "value", BYTE scalars as one-character strings, and booleans in arrays as 0/1.
    """
    if isinstance(d, tuple) and len(d) == 2 and isinstance(d[0], dict):
        values, types = d
        for name, v in values.items():
            return canonical(v, types.get(name))
        return None
    if isinstance(t, dict) and isinstance(d, dict):
        return {k: canonical(v, t.get(k)) for k, v in d.items()}
    if isinstance(t, list) and t and isinstance(t[0], dict) and isinstance(d, list):
        return [canonical(x, t[0]) for x in d]
    if t == pva.BYTE and isinstance(d, str) and len(d) == 1:
        n = ord(d)
        return n - 256 if n > 127 else n
    if t == [pva.BOOLEAN]:
        return [bool(x) for x in plain(d)]
    return plain(d)


def read(v):
    return canonical(v.toDict(), v.getIntrospectionDict())


def field_type(obj, path):
    """The introspection entry of a dotted path."""
    t = obj.getIntrospectionDict()
    for part in path.split("."):
        t = t[part]
    return t


def assign(obj, path, spec):
    """Write one FIELDS entry into the PvObject `obj`."""
    if isinstance(spec, dict) and "@type" in spec:
        t, v = spec["@type"], spec["value"]
        member = spec.get("@union", "value")
        member_type = [TYPES[t[:-2]]] if t.endswith("[]") else TYPES[t]
        obj.setUnion(path, pva.PvObject({member: member_type}, {member: v}))
    elif isinstance(spec, list) and spec and isinstance(spec[0], dict):
        obj.setStructureArray(path, spec)
    elif field_type(obj, path) == [pva.BYTE]:
        # pvapy takes plain ints for a byte array only as a numpy array.
        obj.set({path: np.array(spec, dtype=np.int8)})
    else:
        obj.set({path: spec})


def main(argv):
    def do_op(kind, pv, args):
        ch = pva.Channel(pv)
        ch.setTimeout(OP_TIMEOUT)
        if kind == "get":
            v = ch.get(args[0] if args else "field()")
            got = {"op": "get", "pv": pv, "value": read(v), "type": plain(v.getIntrospectionDict())}
            print(json.dumps(got))
        elif kind == "put":
            new = json.loads(args[0])
            if isinstance(new, dict):
                cur = ch.get("field()")
                cur.set({"value": new})
                ch.put(cur)
            elif isinstance(new, bool):
                # pvapy parses booleans from the lowercase words only.
                ch.put("true" if new else "false")
            else:
                ch.put(new)
            value = read(ch.get("field()"))
            print(json.dumps({"op": "put", "pv": pv, "value": value["value"]}))
        elif kind == "set":
            cur = ch.get("field()")
            for path, spec in json.loads(args[0]).items():
                assign(cur, path, spec)
            ch.put(cur)
            print(json.dumps({"op": "set", "pv": pv, "value": read(ch.get("field()"))}))
        elif kind == "monitor":
            # A queue read from this thread, not a callback: pvapy 5.6 calls monitor
            # callbacks from its own thread and now and then does so without the GIL,
            # which kills the interpreter ("PyThreadState_Get: ... the GIL is released").
            want = int(args[0])
            seen = []
            queue = pva.PvObjectQueue()
            ch.qMonitor(queue, args[1] if len(args) > 1 else "field()")
            deadline = time.monotonic() + 20.0
            while len(seen) < want and time.monotonic() < deadline:
                try:
                    v = queue.get(min(1.0, max(0.0, deadline - time.monotonic())))
                except pva.QueueEmpty:
                    continue
                value = read(v)
                seen.append(value.get("value"))
                print(json.dumps({"op": "update", "pv": pv, "n": len(seen), "value": value}), flush=True)
            ch.stopMonitor()
            print(json.dumps({"op": "monitor", "pv": pv, "complete": len(seen) >= want, "values": seen}))
        elif kind == "info":
            t = ch.getIntrospectionDict()
            print(json.dumps({"op": "info", "pv": pv, "type": plain(t)}))
        else:
            raise ValueError("unknown op " + kind)

    return run_ops(argv, do_op)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
