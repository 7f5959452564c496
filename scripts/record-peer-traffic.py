#!/usr/bin/env python3
"""Record golden PVAccess byte streams between independently written peers.

For every case a server of one peer (p4p over pvxs, or pvapy over pvAccessCPP) and a client of a
peer run as child processes on loopback only.  A small recording TCP proxy sits between them; the
client's UDP search (EPICS_PVA_ADDR_LIST=127.0.0.1, EPICS_PVA_BROADCAST_PORT=<port>) is answered
by a small search responder in this script that names the proxy's port as the server address; the
real server listens on another port (and its own UDP port) that the client never hears of.  TCP
name-server search (EPICS_PVA_NAME_SERVERS) cannot be used for this: both pvxs and pvAccessCPP put
the server's own listening port into the search reply, so the client would bypass the proxy.

Usage (with a Python that has p4p and pvapy installed, e.g. .venv/bin/python):

    record-peer-traffic.py                 # record every case, write .bin files + manifest.json
    record-peer-traffic.py --cases A,B     # only these cases (manifest entries of others are kept)
    record-peer-traffic.py --check         # parse the recorded files, print message sequences,
                                           # decode the data and compare it with manifest.json
    record-peer-traffic.py --list          # list the case names

Every wait is bounded; children are killed when a case ends.  Default output directory:
crates/pva-codec/tests/data/peers/ (relative to the repository root).

Internal roles (run by the script itself): --role server|client --case NAME.
"""

import argparse
import json
import os
import queue
import select
import socket
import struct
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "crates", "pva-codec", "tests", "data", "peers")

STEP_TIMEOUT = 15.0  # seconds for any single expected event
CHILD_LIFETIME = 60.0  # a child exits by itself after this long, whatever happens

# ---------------------------------------------------------------------------------------------
# Cases and the exact values the server publishes
# ---------------------------------------------------------------------------------------------

TS_BASE = 1700000000  # timeStamp.secondsPastEpoch of update 0


def timestamp(k):
    """timeStamp (and dataTimeStamp) of update k."""
    return {"secondsPastEpoch": TS_BASE + k, "nanoseconds": 250000000 * (k + 1), "userTag": 0}


SCALAR_VALUES = [3.25, 4.5, -1.125]
SCALAR_ALARMS = [
    {"severity": 0, "status": 0, "message": ""},
    {"severity": 1, "status": 1, "message": "HIGH"},
    {"severity": 0, "status": 0, "message": ""},
]
ENUM_CHOICES = ["A", "B", "C"]
ENUM_INDEXES = [1, 2, 0]
NO_ALARM = {"severity": 0, "status": 0, "message": ""}
PIXEL_RULE = "pixel[i] = (1000*k + 3*i + 1) mod 65536, i = flat index (x fastest: i = y*width + x), k = update index"


def pixels(k, n):
    return [(1000 * k + 3 * i + 1) % 65536 for i in range(n)]


# value_type: the scalar type each server puts into the attribute's variant `value`
# (p4p turns a Python int into a 64-bit long; pvapy's PvInt gives a 32-bit int)
ND_ATTRIBUTES = [
    {"name": "ColorMode", "value": 0, "value_type": {"p4p": "long", "pvapy": "int"}, "descriptor": ""},
    {"name": "Exposure", "value": 0.125, "value_type": {"p4p": "double", "pvapy": "double"},
     "descriptor": ""},
]


def expected_update(ntype, k, dims=None, server=None):
    """The value the server publishes as update k (k = 0 is the first/initial value)."""
    if ntype == "NTScalar":
        return {
            "value": SCALAR_VALUES[k],
            "alarm": dict(SCALAR_ALARMS[k]),
            "timeStamp": timestamp(k),
        }
    if ntype == "NTEnum":
        return {
            "value": {"index": ENUM_INDEXES[k], "choices": list(ENUM_CHOICES)},
            "alarm": dict(NO_ALARM),
            "timeStamp": timestamp(k),
        }
    if ntype == "NTNDArray":
        w, h = dims
        n = w * h
        return {
            "value": {
                "union_field": "ushortValue",
                # selector of ushortValue: the union's member order differs between the peers
                "union_index": {"p4p": 6, "pvapy": 4}[server],
                "dtype": "uint16",
                "count": n,
                "rule": PIXEL_RULE,
                "k": k,
                "first": pixels(k, min(n, 8)),
                "last": pixels(k, n)[-1],
                "sum": sum(pixels(k, n)),
            },
            "dimension": [
                {"size": w, "offset": 0, "fullSize": w, "binning": 1, "reverse": False},
                {"size": h, "offset": 0, "fullSize": h, "binning": 1, "reverse": False},
            ],
            "uniqueId": k + 1,
            "compressedSize": n * 2,
            "uncompressedSize": n * 2,
            "codec": {"name": ""},
            "attribute": [dict(a, value_type=a["value_type"][server]) for a in ND_ATTRIBUTES],
            "alarm": dict(NO_ALARM),
            "timeStamp": timestamp(k),
            "dataTimeStamp": timestamp(k),
        }
    raise ValueError(ntype)


PEER_INFO = {
    "p4p": "p4p 4.3.0 (pvxs, pvxslibs 1.5.3)",
    "pvapy": "pvapy 5.6.0 (pvAccessCPP 7.1.8, pvDatabase)",
}


def build_cases():
    cases = []

    def add(server, client, op, ntype, dims=None, tag=""):
        short = {"NTScalar": "ntscalar", "NTEnum": "ntenum", "NTNDArray": "ntndarray"}[ntype]
        name = "%s_%s_%s_%s%s" % (server, client, op, short, tag)
        nupd = 3 if op == "monitor" else 1
        cases.append({
            "name": name,
            "server": server,
            "client": client,
            "operation": op,
            "pv": "golden:%s" % name,
            "normative_type": ntype,
            "dims": dims,
            "updates": nupd,
        })

    for peer in ("p4p", "pvapy"):
        for op in ("get", "monitor"):
            add(peer, peer, op, "NTScalar")
            add(peer, peer, op, "NTEnum")
            add(peer, peer, op, "NTNDArray", dims=[4, 3])
    # 128x128 uint16 = 32 KiB of pixels: one unsegmented message from both peers on loopback
    add("pvapy", "pvapy", "get", "NTNDArray", dims=[128, 128], tag="_big")
    add("p4p", "p4p", "get", "NTNDArray", dims=[128, 128], tag="_big")
    # 256x128 uint16 = 64 KiB: pvAccessCPP sends arrays of >= 64 KiB as their own segment
    add("pvapy", "pvapy", "get", "NTNDArray", dims=[256, 128], tag="_seg")
    add("pvapy", "pvapy", "monitor", "NTNDArray", dims=[256, 128], tag="_seg")
    # cross cases
    add("pvapy", "p4p", "get", "NTNDArray", dims=[256, 128], tag="_seg")
    add("pvapy", "p4p", "monitor", "NTScalar")
    add("p4p", "pvapy", "get", "NTEnum")
    return cases


CASES = {c["name"]: c for c in build_cases()}

# ---------------------------------------------------------------------------------------------
# Child roles: server and client of each peer.  They talk to the orchestrator by lines on
# stdin/stdout: the server answers READY, then POST k -> POSTED k, QUIT; the client prints
# UPDATE k <json> per value received and ends after the expected number (or on QUIT).
# ---------------------------------------------------------------------------------------------


def emit(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def stdin_lines():
    """Lines from stdin, bounded by CHILD_LIFETIME in total."""
    deadline = time.monotonic() + CHILD_LIFETIME
    buf = b""
    fd = sys.stdin.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode().strip()


def watchdog():
    def die():
        time.sleep(CHILD_LIFETIME)
        os._exit(3)

    threading.Thread(target=die, daemon=True).start()


# ---- p4p server ----


_P4P_NT = {}


def p4p_value(case, k):
    import numpy
    from p4p.nt import NTEnum, NTNDArray, NTScalar

    ntype = case["normative_type"]
    exp = expected_update(ntype, k, case["dims"], case["server"])
    if ntype not in _P4P_NT:  # one type object per PV: post() wants the type of open()
        _P4P_NT[ntype] = {"NTScalar": lambda: NTScalar("d"), "NTEnum": NTEnum,
                          "NTNDArray": NTNDArray}[ntype]()
    nt = _P4P_NT[ntype]
    if ntype == "NTScalar":
        V = nt.wrap(exp["value"])
    elif ntype == "NTEnum":
        V = nt.wrap({"index": exp["value"]["index"], "choices": exp["value"]["choices"]})
    else:
        w, h = case["dims"]
        arr = numpy.array(pixels(k, w * h), dtype=numpy.uint16).reshape((h, w))
        V = nt.wrap(arr, attrib={"ColorMode": 0, "Exposure": 0.125})
        V["uniqueId"] = exp["uniqueId"]
        V["codec.name"] = ""
        V["dataTimeStamp"] = exp["dataTimeStamp"]
    V["alarm"] = exp["alarm"]
    V["timeStamp"] = exp["timeStamp"]
    return nt, V


def role_server_p4p(case):
    from p4p.server import Server
    from p4p.server.thread import SharedPV

    _, V0 = p4p_value(case, 0)
    pv = SharedPV(initial=V0)  # already complete Values: no nt wrapping on open()/post()
    with Server(providers=[{case["pv"]: pv}]):
        emit("READY")
        for line in stdin_lines():
            if line.startswith("POST "):
                k = int(line.split()[1])
                _, V = p4p_value(case, k)
                pv.post(V)
                emit("POSTED", k)
            elif line == "QUIT":
                break


# ---- pvapy server ----


def pvapy_value(case, k):
    import pvaccess as pva

    ntype = case["normative_type"]
    exp = expected_update(ntype, k, case["dims"], case["server"])
    ts = exp["timeStamp"]
    al = exp["alarm"]
    if ntype == "NTScalar":
        V = pva.NtScalar(pva.DOUBLE, exp["value"])
    elif ntype == "NTEnum":
        V = pva.NtEnum(exp["value"]["choices"], exp["value"]["index"])
    else:
        w, h = case["dims"]
        V = pva.NtNdArray()
        V.setValue({"ushortValue": pixels(k, w * h)})
        V.setDimension([pva.PvDimension(w, 0, w, 1, False), pva.PvDimension(h, 0, h, 1, False)])
        V.setUniqueId(exp["uniqueId"])
        # (the setCompressedSize()/setUncompressedSize() methods crash pvapy 5.6.0)
        V["compressedSize"] = exp["compressedSize"]
        V["uncompressedSize"] = exp["uncompressedSize"]
        V.setDataTimeStamp(pva.PvTimeStamp(ts["secondsPastEpoch"], ts["nanoseconds"], ts["userTag"]))
        V.setAttribute([
            pva.NtAttribute("ColorMode", pva.PvInt(0)),
            pva.NtAttribute("Exposure", pva.PvDouble(0.125)),
        ])
    V.setAlarm(pva.PvAlarm(al["severity"], al["status"], al["message"]))
    V.setTimeStamp(pva.PvTimeStamp(ts["secondsPastEpoch"], ts["nanoseconds"], ts["userTag"]))
    return V


def role_server_pvapy(case):
    import pvaccess as pva

    server = pva.PvaServer(case["pv"], pvapy_value(case, 0))
    try:
        emit("READY")
        for line in stdin_lines():
            if line.startswith("POST "):
                k = int(line.split()[1])
                server.update(case["pv"], pvapy_value(case, k))
                emit("POSTED", k)
            elif line == "QUIT":
                break
    finally:
        server.stop()


# ---- summaries of what a client received (compared by the orchestrator) ----


def summarize(ntype, d):
    """Reduce a received value (a plain dict) to the fields of expected_update()."""
    out = {"alarm": d.get("alarm"), "timeStamp": d.get("timeStamp")}
    if ntype == "NTScalar":
        out["value"] = d.get("value")
    elif ntype == "NTEnum":
        v = d.get("value") or {}
        out["value"] = {"index": v.get("index"), "choices": list(v.get("choices") or [])}
    else:
        v = d.get("value")
        if isinstance(v, tuple) and isinstance(v[0], dict):  # pvapy: ({'ushortValue': arr}, types)
            v = v[0]
        if isinstance(v, dict):
            (fname, arr), = v.items()
        else:  # p4p: (field name, array) or bare array
            fname, arr = None, v
            if isinstance(v, tuple):
                fname, arr = v
        arr = [int(x) for x in arr]
        out["value"] = {"union_field": fname, "count": len(arr), "first": arr[:8],
                        "last": arr[-1] if arr else None, "sum": sum(arr)}
        out["dimension"] = [dict(x) for x in d.get("dimension", [])]
        out["uniqueId"] = d.get("uniqueId")
        out["dataTimeStamp"] = d.get("dataTimeStamp")
        out["compressedSize"] = d.get("compressedSize")
        out["uncompressedSize"] = d.get("uncompressedSize")
        out["attribute"] = [{"name": a.get("name"), "value": a.get("value")}
                            for a in d.get("attribute", [])]
    return out


def jsonable(x):
    try:
        import numpy
    except ImportError:  # pragma: no cover
        numpy = None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if numpy is not None and isinstance(x, numpy.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if numpy is not None and isinstance(x, numpy.generic):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "toDict"):
        return jsonable(x.toDict())
    return repr(x)


# ---- clients ----


def wait_for_quit():
    """Until QUIT on stdin (bounded, see stdin_lines)."""
    for line in stdin_lines():
        if line == "QUIT":
            break


def report_updates(case, got, to_dict):
    """Emit the summary of each update taken from queue `got` (to_dict makes it a plain dict)
    as it comes; once case["updates"] came, stop at QUIT. Bounded by CHILD_LIFETIME."""
    ntype = case["normative_type"]
    n = 0
    done = False
    deadline = time.monotonic() + CHILD_LIFETIME
    lines = stdin_lines()
    while not done and time.monotonic() < deadline:
        try:
            update = got.get(timeout=0.2)
            emit("UPDATE", n, json.dumps(jsonable(summarize(ntype, to_dict(update)))))
            n += 1
        except queue.Empty:
            pass
        if n >= case["updates"]:
            for line in lines:
                if line == "QUIT":
                    done = True
                    break


# ---- p4p client ----


def role_client_p4p(case):
    from p4p.client.thread import Context

    ntype = case["normative_type"]
    ctxt = Context("pva", nt=False)
    try:
        if case["operation"] == "get":
            V = ctxt.get(case["pv"], timeout=STEP_TIMEOUT)
            emit("UPDATE", 0, json.dumps(jsonable(summarize(ntype, p4p_dict(V)))))
            wait_for_quit()
        else:
            got = queue.Queue()
            sub = ctxt.monitor(case["pv"], got.put, notify_disconnect=False)
            report_updates(case, got, p4p_dict)
            sub.close()
    finally:
        ctxt.close()


def p4p_dict(V):
    """Plain dict of a p4p Value; an NTNDArray value union is given as (member name, array)."""
    d = V.todict()
    if "dimension" in d:
        d["value"] = (union_selected_p4p(V), V["value"])
    return d


def union_selected_p4p(V):
    import numpy
    arr = V["value"]
    code = getattr(arr, "dtype", None)
    if code is None:
        return None
    return {numpy.dtype("uint16"): "ushortValue", numpy.dtype("int16"): "shortValue",
            numpy.dtype("uint8"): "ubyteValue", numpy.dtype("int8"): "byteValue",
            numpy.dtype("float64"): "doubleValue", numpy.dtype("float32"): "floatValue",
            numpy.dtype("int32"): "intValue", numpy.dtype("uint32"): "uintValue",
            numpy.dtype("int64"): "longValue", numpy.dtype("uint64"): "ulongValue"}.get(arr.dtype)


# ---- pvapy client ----


def role_client_pvapy(case):
    import pvaccess as pva

    ntype = case["normative_type"]
    ch = pva.Channel(case["pv"])
    ch.setTimeout(STEP_TIMEOUT)
    if case["operation"] == "get":
        V = ch.get("field()")
        emit("UPDATE", 0, json.dumps(jsonable(summarize(ntype, V.toDict()))))
        wait_for_quit()
    else:
        got = queue.Queue()
        ch.monitor(lambda V: got.put(V.toDict()), "field()")
        report_updates(case, got, dict)
        ch.stopMonitor()
    del ch


ROLES = {
    ("server", "p4p"): role_server_p4p,
    ("server", "pvapy"): role_server_pvapy,
    ("client", "p4p"): role_client_p4p,
    ("client", "pvapy"): role_client_pvapy,
}

# ---------------------------------------------------------------------------------------------
# Recording proxy
# ---------------------------------------------------------------------------------------------


class RecordingProxy:
    """Accepts TCP connections on 127.0.0.1:listen_port, forwards each to 127.0.0.1:target_port,
    and keeps every byte of each direction."""

    def __init__(self, listen_port, target_port):
        self.target_port = target_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", listen_port))
        self.lsock.listen(8)
        self.lsock.settimeout(0.2)
        self.conns = []  # dicts: c2s, s2c bytearrays, threads, sockets
        self.stopping = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                csock, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            ssock = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            for s in (csock, ssock):
                s.settimeout(0.2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = {"c2s": bytearray(), "s2c": bytearray(), "socks": (csock, ssock)}
            conn["threads"] = [
                threading.Thread(target=self._pump, args=(csock, ssock, conn["c2s"]), daemon=True),
                threading.Thread(target=self._pump, args=(ssock, csock, conn["s2c"]), daemon=True),
            ]
            self.conns.append(conn)
            for t in conn["threads"]:
                t.start()

    def _pump(self, src, dst, record):
        while not self.stopping.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            record.extend(data)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            for t in conn["threads"]:
                t.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        self.lsock.close()
        for conn in self.conns:
            for s in conn["socks"]:
                try:
                    s.close()
                except OSError:
                    pass


class SearchResponder:
    """Answers UDP SEARCH requests for one PV name on 127.0.0.1:port with a SEARCH_RESPONSE that
    names 127.0.0.1:proxy_port, so the client opens its TCP connection to the recording proxy."""

    GUID = b"pvabridgeREC"  # 12 bytes

    def __init__(self, port, pv, proxy_port):
        self.pv = pv
        self.proxy_port = proxy_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.answered = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self._handle(data, src)
            except Exception:  # noqa: BLE001 - ignore malformed datagrams
                pass

    def _handle(self, data, src):
        for (_, _, flags, cmd, _, payload) in split_messages(data):
            if flags & 0x01 or cmd != 3:
                continue
            r = Reader(payload, bool(flags & 0x80))
            seq = r.un("I")
            r.take(4)  # flags + reserved
            r.take(16)  # response address
            r.un("H")  # response port
            for _ in range(r.size()):
                r.string()  # protocols
            cids = []
            for _ in range(r.un("H")):
                cid = r.un("I")
                if r.string() == self.pv:
                    cids.append(cid)
            if not cids:
                continue
            body = (self.GUID + struct.pack("<I", seq) + bytes(10) + b"\xff\xff"
                    + socket.inet_aton("127.0.0.1") + struct.pack("<H", self.proxy_port)
                    + b"\x03tcp" + b"\x01" + struct.pack("<H", len(cids))
                    + b"".join(struct.pack("<I", c) for c in cids))
            msg = bytes([0xCA, 2, 0x40, 4]) + struct.pack("<I", len(body)) + body
            self.sock.sendto(msg, src)
            self.answered += 1

    def close(self):
        self.stopping.set()
        self.thread.join(1.0)
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Child:
    def __init__(self, args, env, label):
        self.label = label
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _read(stream, sink):
        for raw in iter(stream.readline, b""):
            sink(raw.decode(errors="replace").rstrip("\n"))

    def send(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            pass

    def expect(self, prefix, timeout=STEP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s: no %r within %.0fs; stderr:\n%s"
                                   % (self.label, prefix, timeout, "\n".join(self.err[-20:])))
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise RuntimeError("%s exited (%s) before %r; stderr:\n%s"
                                       % (self.label, self.proc.returncode, prefix, "\n".join(self.err[-20:])))
                continue
            if line.startswith(prefix):
                return line

    def finish(self, timeout=5.0):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def peer_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_PVA")}
    env.update(extra)
    return env


def run_case(case, outdir, verbose):
    s_port = free_port(socket.SOCK_STREAM)
    p_port = free_port(socket.SOCK_STREAM)
    s_bcast = free_port(socket.SOCK_DGRAM)
    c_bcast = free_port(socket.SOCK_DGRAM)
    while c_bcast == s_bcast:
        c_bcast = free_port(socket.SOCK_DGRAM)
    server_env = peer_env({
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_SERVER_PORT": str(s_port),
        "EPICS_PVAS_SERVER_PORT": str(s_port),
        "EPICS_PVA_BROADCAST_PORT": str(s_bcast),
        "EPICS_PVAS_BROADCAST_PORT": str(s_bcast),
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    })
    client_env = peer_env({
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        # UDP search goes to our responder, which names the proxy as the server.
        "EPICS_PVA_BROADCAST_PORT": str(c_bcast),
        "EPICS_PVA_SERVER_PORT": str(free_port(socket.SOCK_STREAM)),
    })
    me = [sys.executable, os.path.abspath(__file__)]
    server = client = proxy = responder = None
    received = []
    try:
        server = Child(me + ["--role", "server", "--case", case["name"]], server_env,
                       "server(%s)" % case["server"])
        server.expect("READY")
        proxy = RecordingProxy(p_port, s_port)
        responder = SearchResponder(c_bcast, case["pv"], p_port)
        client = Child(me + ["--role", "client", "--case", case["name"]], client_env,
                       "client(%s)" % case["client"])
        for k in range(case["updates"]):
            line = client.expect("UPDATE %d " % k)
            received.append(json.loads(line.split(" ", 2)[2]))
            if k + 1 < case["updates"]:
                time.sleep(0.2)
                server.send("POST %d" % (k + 1))
                server.expect("POSTED %d" % (k + 1))
        time.sleep(0.3)
        client.send("QUIT")
        client.finish()
        time.sleep(0.3)
        server.send("QUIT")
        server.finish()
    finally:
        for ch in (client, server):
            if ch is not None:
                ch.kill()
        if proxy is not None:
            proxy.close()
        if responder is not None:
            responder.close()
    if verbose:
        for ch in (server, client):
            if ch is not None and ch.err:
                print("  [%s stderr]\n    %s" % (ch.label, "\n    ".join(ch.err[-10:])))
    if len(proxy.conns) != 1:
        raise RuntimeError("expected exactly one TCP connection through the proxy, saw %d"
                           % len(proxy.conns))
    conn = proxy.conns[0]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, case["name"] + ".c2s.bin"), "wb") as f:
        f.write(bytes(conn["c2s"]))
    with open(os.path.join(outdir, case["name"] + ".s2c.bin"), "wb") as f:
        f.write(bytes(conn["s2c"]))
    # compare what the client library decoded with what the server published
    problems = []
    for k, got in enumerate(received):
        exp = expected_update(case["normative_type"], k, case["dims"], case["server"])
        problems += compare_summary(case["normative_type"], exp, got, "update %d (client view)" % k)
    return len(conn["c2s"]), len(conn["s2c"]), problems


def compare_summary(ntype, exp, got, where):
    probs = []

    def chk(path, a, b):
        if a != b:
            probs.append("%s %s: expected %r, got %r" % (where, path, a, b))

    chk("alarm", exp["alarm"], {k: got["alarm"].get(k) for k in ("severity", "status", "message")})
    chk("timeStamp", exp["timeStamp"], got["timeStamp"])
    if ntype in ("NTScalar", "NTEnum"):
        chk("value", exp["value"], got["value"])
    else:
        ev, gv = exp["value"], got["value"]
        for key in ("count", "first", "last", "sum"):
            chk("value." + key, ev[key], gv[key])
        if gv.get("union_field") is not None:
            chk("value.union_field", ev["union_field"], gv["union_field"])
        chk("dimension", exp["dimension"], got["dimension"])
        for key in ("uniqueId", "dataTimeStamp", "compressedSize", "uncompressedSize"):
            chk(key, exp[key], got[key])
        chk("attribute names", [a["name"] for a in exp["attribute"]], [a["name"] for a in got["attribute"]])
    return probs


def manifest_entry(case, sizes, messages=None):
    ntype = case["normative_type"]
    type_id = {"NTScalar": "epics:nt/NTScalar:1.0", "NTEnum": "epics:nt/NTEnum:1.0",
               "NTNDArray": "epics:nt/NTNDArray:1.0"}[ntype]
    entry = {
        "case": case["name"],
        "server_peer": case["server"],
        "server_impl": PEER_INFO[case["server"]],
        "client_peer": case["client"],
        "client_impl": PEER_INFO[case["client"]],
        "operation": case["operation"],
        "pv": case["pv"],
        "normative_type": ntype,
        "type_id": type_id,
        # pvapy asks for 'field()'; p4p's default request puts the same structure on the wire
        "client_request": "field()",
        "search": "UDP search answered by the recorder with the proxy's address (not in the TCP streams)",
        "c2s_file": case["name"] + ".c2s.bin",
        "s2c_file": case["name"] + ".s2c.bin",
        "c2s_bytes": sizes[0],
        "s2c_bytes": sizes[1],
        "updates_sent": case["updates"],
        "values": [expected_update(ntype, k, case["dims"], case["server"])
                   for k in range(case["updates"])],
    }
    if messages is not None:
        entry["messages"] = messages
        entry["segmented"] = any((f >> 4) & 3 for d in messages.values() for (_, f, _) in d)
    if ntype == "NTScalar":
        entry["value_type"] = "double"
    if ntype == "NTNDArray":
        entry["width"], entry["height"] = case["dims"]
        entry["dtype"] = "uint16"
        entry["pixel_rule"] = PIXEL_RULE
    if case["operation"] == "monitor":
        entry["monitor_note"] = ("values[0] is the initial value the server holds when the "
                                 "monitor starts; values[1..] are posted one at a time after the "
                                 "client received the previous one. Updates after the first "
                                 "may carry only the changed fields (see the changed bitset).")
    return entry


# ---------------------------------------------------------------------------------------------
# Independent checker: split streams into PVA messages, decode the data
# ---------------------------------------------------------------------------------------------

APP_CMDS = {
    0: "BEACON", 1: "CONNECTION_VALIDATION", 2: "ECHO", 3: "SEARCH", 4: "SEARCH_RESPONSE",
    5: "AUTHNZ", 6: "ACL_CHANGE", 7: "CREATE_CHANNEL", 8: "DESTROY_CHANNEL",
    9: "CONNECTION_VALIDATED", 10: "GET", 11: "PUT", 12: "PUT_GET", 13: "MONITOR", 14: "ARRAY",
    15: "DESTROY_REQUEST", 16: "PROCESS", 17: "GET_FIELD", 18: "MESSAGE", 19: "MULTIPLE_DATA",
    20: "RPC", 21: "CANCEL_REQUEST", 22: "ORIGIN_TAG",
}
CTRL_CMDS = {0: "MARK_TOTAL_BYTES_SENT", 1: "ACK_TOTAL_BYTES_RECEIVED", 2: "SET_BYTE_ORDER",
             3: "ECHO_REQUEST", 4: "ECHO_RESPONSE"}
SEG_NAMES = {0: "", 1: "first", 3: "middle", 2: "last"}


def split_messages(data):
    """Yield (offset, version, flags, command, size, payload) for every message in a stream."""
    off = 0
    out = []
    while off < len(data):
        if len(data) - off < 8:
            raise ValueError("truncated header at %d" % off)
        magic, version, flags, cmd = data[off], data[off + 1], data[off + 2], data[off + 3]
        if magic != 0xCA:
            raise ValueError("bad magic 0x%02x at %d" % (magic, off))
        size = struct.unpack(">I" if flags & 0x80 else "<I", data[off + 4:off + 8])[0]
        if flags & 0x01:  # control: the size field is a value, no payload follows
            out.append((off, version, flags, cmd, size, b""))
            off += 8
            continue
        end = off + 8 + size
        if end > len(data):
            raise ValueError("truncated payload at %d (size %d)" % (off, size))
        out.append((off, version, flags, cmd, size, data[off + 8:end]))
        off = end
    return out


def describe(msg):
    _, version, flags, cmd, size, _ = msg
    if flags & 0x01:
        name = CTRL_CMDS.get(cmd, "ctrl?%d" % cmd)
    else:
        name = APP_CMDS.get(cmd, "cmd?%d" % cmd)
    seg = SEG_NAMES[(flags >> 4) & 3]
    return "%-26s cmd=0x%02x flags=0x%02x v%d size=%d%s" % (
        name, cmd, flags, version, size, (" seg=" + seg) if seg else "")


def reassemble(msgs):
    """Join segmented messages: yield (cmd, flags_of_first, big_endian, payload, nsegments)."""
    out = []
    pending = None
    for (_, _, flags, cmd, _, payload) in msgs:
        if flags & 0x01:
            continue
        seg = (flags >> 4) & 3
        if seg == 0:
            out.append((cmd, flags, bool(flags & 0x80), payload, 1))
        elif seg == 1:
            pending = [cmd, flags, bool(flags & 0x80), bytearray(payload), 1]
        else:
            pending[3].extend(payload)
            pending[4] += 1
            if seg == 2:
                out.append((pending[0], pending[1], pending[2], bytes(pending[3]), pending[4]))
                pending = None
    return out


class Reader:
    def __init__(self, data, big):
        self.d = data
        self.o = 0
        self.e = ">" if big else "<"

    def take(self, n):
        if self.o + n > len(self.d):
            raise ValueError("read past end")
        b = self.d[self.o:self.o + n]
        self.o += n
        return b

    def un(self, fmt):
        f = self.e + fmt
        return struct.unpack(f, self.take(struct.calcsize(f)))[0]

    def size(self):
        b = self.take(1)[0]
        if b == 255:
            return -1
        if b == 254:
            n = self.un("i")
            if n == 0x7FFFFFFF:
                n = self.un("q")
            return n
        return b

    def string(self):
        n = self.size()
        return "" if n <= 0 else self.take(n).decode("utf-8")

    def left(self):
        return len(self.d) - self.o


SCALAR_FMT = {0x00: "?", 0x20: "b", 0x21: "h", 0x22: "i", 0x23: "q", 0x24: "B", 0x25: "H",
              0x26: "I", 0x27: "Q", 0x42: "f", 0x43: "d"}
SCALAR_NAME = {0x00: "boolean", 0x20: "byte", 0x21: "short", 0x22: "int", 0x23: "long",
               0x24: "ubyte", 0x25: "ushort", 0x26: "uint", 0x27: "ulong", 0x42: "float",
               0x43: "double", 0x60: "string"}


def read_fielddesc(r, registry):
    """Decode a type description; returns a dict node, or None for the null type (0xFF)."""
    code = r.take(1)[0]
    if code == 0xFF:
        return None
    if code == 0xFE:
        return registry[r.un("h")]
    if code == 0xFD:
        key = r.un("h")
        t = read_fielddesc(r, registry)
        registry[key] = t
        return t
    if code == 0xFC:
        raise ValueError("tagged type descriptions not handled")
    arr = (code >> 3) & 3
    if arr == 2 or arr == 3:  # bounded / fixed arrays carry a size
        r.size()
    if code & 0xE0 == 0x80 and arr == 1 and code & 0x07 != 3:
        # structure/union/variant array: the element's own description follows
        return {"k": "array_of", "elem": read_fielddesc(r, registry)}
    if code & 0xE0 == 0x80:  # complex
        sub = code & 0x07
        if sub in (0, 1):  # struct or union: an id, then named members
            tid = r.string()
            n = r.size()
            fields = []
            for _ in range(n):
                fname = r.string()
                fields.append((fname, read_fielddesc(r, registry)))
            node = {"k": "struct" if sub == 0 else "union", "id": tid, "fields": fields}
        elif sub == 2:
            node = {"k": "any"}
        elif sub == 3:
            r.size()
            node = {"k": "scalar", "t": 0x60}
        else:
            raise ValueError("bad complex code 0x%02x" % code)
        return node
    base = code & 0xE7 if code & 0xE0 != 0x60 else 0x60
    if arr:
        return {"k": "sarray", "t": base}
    return {"k": "scalar", "t": base}


def count_fields(t):
    if t is not None and t["k"] == "struct":
        return 1 + sum(count_fields(ft) for _, ft in t["fields"])
    return 1


def read_scalar(r, t):
    if t == 0x60:
        return r.string()
    return r.un(SCALAR_FMT[t])


def read_value(r, t, registry):
    k = t["k"]
    if k == "scalar":
        return read_scalar(r, t["t"])
    if k == "sarray":
        n = r.size()
        if t["t"] == 0x60:
            return [r.string() for _ in range(n)]
        fmt = SCALAR_FMT[t["t"]]
        sz = struct.calcsize(fmt)
        raw = r.take(n * sz)
        return list(struct.unpack(r.e + fmt * n, raw))
    if k == "struct":
        return {fname: read_value(r, ft, registry) for fname, ft in t["fields"]}
    if k == "union":
        sel = r.size()
        if sel < 0:
            return {"_union": None}
        fname, ft = t["fields"][sel]
        return {"_union": fname, "_index": sel, "_value": read_value(r, ft, registry)}
    if k == "any":
        ft = read_fielddesc(r, registry)
        if ft is None:
            return {"_any": None}
        return {"_any": type_name(ft), "_value": read_value(r, ft, registry)}
    if k == "array_of":
        n = r.size()
        out = []
        for _ in range(n):
            present = r.take(1)[0]
            out.append(read_value(r, t["elem"], registry) if present else None)
        return out
    raise ValueError(k)


def type_name(t):
    if t is None:
        return "null"
    if t["k"] == "scalar":
        return SCALAR_NAME[t["t"]]
    if t["k"] == "sarray":
        return SCALAR_NAME[t["t"]] + "[]"
    if t["k"] == "struct":
        return "structure " + t["id"]
    if t["k"] == "union":
        return "union " + t["id"]
    if t["k"] == "any":
        return "any"
    return type_name(t["elem"]) + "[]"


def read_bitset(r):
    n = r.size()
    raw = r.take(n)
    bits = set()
    i = 0
    while i + 8 <= n:  # whole 64-bit words in the message byte order
        word = struct.unpack(r.e + "Q", raw[i:i + 8])[0]
        for b in range(64):
            if word >> b & 1:
                bits.add(i * 8 + b)
        i += 8
    while i < n:
        for b in range(8):
            if raw[i] >> b & 1:
                bits.add(i * 8 + b)
        i += 1
    return bits


def read_partial(r, t, bits, offset, registry, out):
    """Decode the fields selected by `bits` from a structure of type t at field offset `offset`."""
    if offset in bits:
        return read_value(r, t, registry)
    if t["k"] != "struct":
        return out
    off = offset + 1
    res = dict(out or {})
    for fname, ft in t["fields"]:
        n = count_fields(ft)
        if any(off <= b < off + n for b in bits):
            res[fname] = read_partial(r, ft, bits, off, registry, (out or {}).get(fname))
        off += n
    return res


def read_status(r):
    code = r.take(1)[0]
    if code == 0xFF:
        return "OK"
    msg = r.string()
    r.string()
    return "status %d %r" % (code, msg)


def field_order(t):
    return [fname for fname, _ in t["fields"]]


def decode_case(case, data_c2s, data_s2c):
    """Decode the GET/MONITOR data of a case. Returns (report lines, [full values], type)."""
    notes = []
    reg_c, reg_s = {}, {}
    c_msgs = reassemble(split_messages(data_c2s))
    s_msgs = reassemble(split_messages(data_s2c))
    for cmd, flags, big, payload, nseg in c_msgs:
        r = Reader(payload, big)
        if cmd in (10, 13):
            sid, rid, sub = r.un("I"), r.un("I"), r.take(1)[0]
            line = "c2s %s sid=%d rid=%d sub=0x%02x" % (APP_CMDS[cmd], sid, rid, sub)
            if sub & 0x08:
                rt = read_fielddesc(r, reg_c)
                rv = read_value(r, rt, reg_c) if rt else None
                line += " pvRequest=%s %s" % (type_name(rt), json.dumps(rv))
                if cmd == 13 and sub & 0x80 and r.left() >= 4:
                    line += " queueSize=%d" % r.un("i")
            elif cmd == 13 and sub & 0x80 and r.left() >= 4:
                line += " ack=%d" % r.un("i")
            notes.append(line)
        elif cmd == 3:
            seq, fl = r.un("I"), r.take(1)[0]
            r.take(3)
            r.take(16)
            port = r.un("H")
            nproto = r.size()
            protos = [r.string() for _ in range(nproto)]
            nch = r.un("H")
            chans = []
            for _ in range(nch):
                cid = r.un("I")
                chans.append((cid, r.string()))
            notes.append("c2s SEARCH seq=%d flags=0x%02x replyport=%d protos=%s channels=%s"
                         % (seq, fl, port, protos, chans))
        elif cmd == 17:
            sid, rid = r.un("I"), r.un("I")
            notes.append("c2s GET_FIELD sid=%d rid=%d subfield=%r" % (sid, rid, r.string()))
        elif cmd == 7:
            n = r.un("H")
            chans = []
            for _ in range(n):
                cid = r.un("I")
                chans.append((cid, r.string()))
            notes.append("c2s CREATE_CHANNEL %s" % chans)
        elif cmd == 1:
            bufsz, regsz, qos = r.un("i"), r.un("h"), r.un("h")
            notes.append("c2s CONNECTION_VALIDATION rxbuf=%d reg=%d qos=0x%x auth=%r"
                         % (bufsz, regsz, qos, r.string()))
    typ = None
    values = []
    current = None
    for cmd, flags, big, payload, nseg in s_msgs:
        r = Reader(payload, big)
        if cmd == 1:
            bufsz, regsz = r.un("i"), r.un("h")
            n = r.size()
            notes.append("s2c CONNECTION_VALIDATION rxbuf=%d reg=%d auth=%s"
                         % (bufsz, regsz, [r.string() for _ in range(n)]))
        elif cmd == 4:
            guid = r.take(12).hex()
            seq = r.un("I")
            addr = r.take(16)
            port = r.un("H")
            proto = r.string()
            found = r.take(1)[0]
            n = r.un("H")
            cids = [r.un("I") for _ in range(n)]
            notes.append("s2c SEARCH_RESPONSE guid=%s seq=%d addr=%s port=%d proto=%s found=%d cids=%s"
                         % (guid, seq, socket.inet_ntop(socket.AF_INET6, addr), port, proto, found, cids))
        elif cmd == 17:
            rid = r.un("I")
            st = read_status(r)
            t = read_fielddesc(r, reg_s)
            notes.append("s2c GET_FIELD rid=%d %s type=%s" % (rid, st, type_name(t)))
        elif cmd == 7:
            cid, sid = r.un("I"), r.un("I")
            notes.append("s2c CREATE_CHANNEL cid=%d sid=%d %s" % (cid, sid, read_status(r)))
        elif cmd in (10, 13):
            rid, sub = r.un("I"), r.take(1)[0]
            if sub & 0x08:
                st = read_status(r)
                typ = read_fielddesc(r, reg_s)
                notes.append("s2c %s INIT rid=%d %s type=%s (%d fields) top-level order=%s"
                             % (APP_CMDS[cmd], rid, st, type_name(typ), count_fields(typ),
                                field_order(typ)))
                continue
            if cmd == 10:
                st = read_status(r)
            else:
                st = "-"
                if sub & 0x10:
                    notes.append("s2c MONITOR rid=%d sub=0x%02x (finish)" % (rid, sub))
                    continue
            bits = read_bitset(r)
            current = read_partial(r, typ, bits, 0, reg_s, current)
            extra = ""
            if cmd == 13:
                extra = " overrun=%s" % sorted(read_bitset(r))
            if r.left():
                extra += " LEFTOVER=%d" % r.left()
            values.append(json.loads(json.dumps(current)))
            notes.append("s2c %s DATA rid=%d sub=0x%02x %s changed=%s%s segments=%d"
                         % (APP_CMDS[cmd], rid, sub, st, sorted(bits), extra, nseg))
    return notes, values, typ


def normalize_decoded(ntype, v):
    """Turn a decoded full value into the shape of expected_update()."""
    out = {"alarm": v["alarm"], "timeStamp": v["timeStamp"]}
    if ntype == "NTScalar":
        out["value"] = v["value"]
    elif ntype == "NTEnum":
        out["value"] = {"index": v["value"]["index"], "choices": v["value"]["choices"]}
    else:
        arr = v["value"]["_value"]
        out["value"] = {"union_field": v["value"]["_union"], "union_index": v["value"]["_index"],
                        "count": len(arr), "first": arr[:8],
                        "last": arr[-1], "sum": sum(arr)}
        out["dimension"] = v["dimension"]
        for key in ("uniqueId", "dataTimeStamp", "compressedSize", "uncompressedSize"):
            out[key] = v[key]
        out["codec"] = {"name": v["codec"]["name"]}
        out["attribute"] = [{"name": a["name"], "value": a["value"].get("_value"),
                             "value_type": a["value"].get("_any"), "descriptor": a["descriptor"]}
                            for a in v["attribute"]]
    return out


def check(outdir, names):
    with open(os.path.join(outdir, "manifest.json")) as f:
        manifest = json.load(f)
    ok = True
    for entry in manifest["cases"]:
        if names and entry["case"] not in names:
            continue
        print("=" * 100)
        print("%s  (server %s, client %s, %s %s)" % (entry["case"], entry["server_peer"],
              entry["client_peer"], entry["operation"], entry["normative_type"]))
        with open(os.path.join(outdir, entry["c2s_file"]), "rb") as f:
            c2s = f.read()
        with open(os.path.join(outdir, entry["s2c_file"]), "rb") as f:
            s2c = f.read()
        for label, data in (("c2s", c2s), ("s2c", s2c)):
            print("  %s (%d bytes):" % (label, len(data)))
            for m in split_messages(data):
                print("    " + describe(m))
        segmented = any((m[2] >> 4) & 3 for d in (c2s, s2c) for m in split_messages(d))
        if entry["case"].endswith("_seg") and not segmented:
            ok = False
            print("  MISMATCH: this case should show segmented messages, and has none")
        if "segmented" in entry and entry["segmented"] != segmented:
            ok = False
            print("  MISMATCH: manifest says segmented=%s" % entry["segmented"])
        notes, values, typ = decode_case(entry, c2s, s2c)
        print("  decoded:")
        for n in notes:
            print("    " + n)
        exp_values = entry["values"]
        if len(values) != len(exp_values):
            ok = False
            print("  MISMATCH: %d data messages, manifest has %d values" % (len(values), len(exp_values)))
        for k, (got, exp) in enumerate(zip(values, exp_values)):
            norm = normalize_decoded(entry["normative_type"], got)
            probs = []
            for key, ev in exp.items():
                gv = norm.get(key)
                if key == "value" and entry["normative_type"] == "NTNDArray":
                    for sub in ("union_field", "union_index", "count", "first", "last", "sum"):
                        if ev[sub] != gv[sub]:
                            probs.append("value.%s: expected %r got %r" % (sub, ev[sub], gv[sub]))
                elif key == "alarm":
                    if ev != {x: gv.get(x) for x in ("severity", "status", "message")}:
                        probs.append("alarm: expected %r got %r" % (ev, gv))
                elif key == "attribute":
                    for ea, ga in zip(ev, gv):
                        for x in ("name", "value", "value_type", "descriptor"):
                            if ea[x] != ga[x]:
                                probs.append("attribute %s.%s: expected %r got %r"
                                             % (ea["name"], x, ea[x], ga[x]))
                    if len(ev) != len(gv):
                        probs.append("attribute count %d vs %d" % (len(ev), len(gv)))
                    types = [ga["value_type"] for ga in gv]
                    print("    update %d attribute variant types on the wire: %s" % (k, types))
                elif ev != gv:
                    probs.append("%s: expected %r got %r" % (key, ev, gv))
            if probs:
                ok = False
                for p in probs:
                    print("  MISMATCH update %d: %s" % (k, p))
            else:
                print("    update %d decodes to the manifest values" % k)
    print("=" * 100)
    print("CHECK %s" % ("PASSED" if ok else "FAILED"))
    return ok


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--cases", default="", help="comma separated case names (default: all)")
    ap.add_argument("--check", action="store_true", help="parse and verify recorded files")
    ap.add_argument("--list", action="store_true", help="list case names")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.role:
        watchdog()
        case = CASES[args.case]
        peer = case[args.role]
        ROLES[(args.role, peer)](case)
        sys.stdout.flush()
        os._exit(0)  # skip slow library teardown; the case is over

    names = [n for n in args.cases.split(",") if n]
    for n in names:
        if n not in CASES:
            sys.exit("unknown case %r (see --list)" % n)
    if args.list:
        for n in CASES:
            print(n)
        return
    if args.check:
        sys.exit(0 if check(args.out, names) else 1)

    mpath = os.path.join(args.out, "manifest.json")
    manifest = {"cases": []}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    entries = {e["case"]: e for e in manifest["cases"]}
    failed = []
    for name, case in CASES.items():
        if names and name not in names:
            continue
        t0 = time.monotonic()
        try:
            sizes = None
            problems = None
            for attempt in range(2):
                try:
                    c2s, s2c, problems = run_case(case, args.out, args.verbose)
                    sizes = (c2s, s2c)
                    break
                except (TimeoutError, RuntimeError) as e:
                    print("  %s attempt %d failed: %s" % (name, attempt + 1, e))
            if sizes is None:
                raise RuntimeError("no recording")
            messages = {}
            for d in ("c2s", "s2c"):
                with open(os.path.join(args.out, "%s.%s.bin" % (name, d)), "rb") as f:
                    messages[d] = [[m[3], m[2], m[4]] for m in split_messages(f.read())]
            entries[name] = manifest_entry(case, sizes, messages)
            status = "ok" if not problems else "VALUE MISMATCH: " + "; ".join(problems)
            print("%-40s c2s=%6d s2c=%6d  %.1fs  %s" % (name, sizes[0], sizes[1], time.monotonic() - t0, status))
            if problems:
                failed.append(name)
        except Exception as e:  # noqa: BLE001 - report and continue with the next case
            print("%-40s FAILED: %s" % (name, e))
            failed.append(name)
    manifest = {
        "description": "Raw PVAccess TCP streams recorded between independent peers; see README.md",
        "peers": PEER_INFO,
        "pixel_rule": PIXEL_RULE,
        "cases": [entries[n] for n in CASES if n in entries],
    }
    with open(mpath, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if failed:
        sys.exit("failed: %s" % ", ".join(failed))


if __name__ == "__main__":
    main()
