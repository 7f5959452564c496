"""A p4p (pvxs) server that reports who writes: the account and host of each put's client.

Usage: p4p_whoami.py PV

Serves PV (an NTScalar string); each put is accepted and PV then holds "ACCOUNT@PEER" as the
server saw the client (its "ca" account, and its address). Prints READY when up; exits when
stdin closes, or after 120 s.
"""
import sys
import threading
import time

from p4p.nt import NTScalar
from p4p.server import Server
from p4p.server.thread import SharedPV


class Whoami:
    def put(self, pv, op):
        pv.post("%s@%s" % (op.account(), op.peer()))
        op.done()


pv = SharedPV(nt=NTScalar("s"), initial="", handler=Whoami())
server = Server(providers=[{sys.argv[1]: pv}])
print("READY", flush=True)

deadline = time.time() + 120


def watchdog():
    while time.time() < deadline:
        time.sleep(0.5)
    server.stop()
    sys.exit(0)


threading.Thread(target=watchdog, daemon=True).start()
for _ in sys.stdin:
    pass
server.stop()
