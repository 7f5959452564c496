"""A p4p (pvxs) server that reports who writes. Usage: p4p_whoami.py PV

Serves PV (an NTScalar string); each put is accepted and PV then holds "ACCOUNT@PEER": the
"ca" account and the address the server saw the client put from. Prints READY when up and
serves until stdin closes.
"""
import sys

from p4p.nt import NTScalar
from p4p.server import Server
from p4p.server.thread import SharedPV


class Whoami:
    def put(self, pv, op):
        pv.post("%s@%s" % (op.account(), op.peer()))
        op.done()


pv = SharedPV(nt=NTScalar("s"), initial="", handler=Whoami())
with Server(providers=[{sys.argv[1]: pv}]):
    print("READY", flush=True)
    for _ in sys.stdin:
        pass
