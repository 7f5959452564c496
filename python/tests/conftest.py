"""Real `pvabridge serve --embedded-dm` and `pvabridge simdet --ad-prefix` processes for the tests,
on loopback with ports of their own, and one RunEngine with the devices connected.

The binary is `PVABRIDGE_BIN` (./scripts/test builds it and sets it), else the repository's
target/debug/pvabridge; a test fails, never skips, when neither is there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from bluesky import RunEngine
from ophyd_async.core import init_devices

from pvabridge_bluesky import SimDetector, StreamingWorkflow

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SLOT = "bsk:wf:"
DETECTOR = "bsk:det:"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pvabridge_bin() -> Path:
    given = os.environ.get("PVABRIDGE_BIN")
    binary = Path(given) if given else REPO / "target" / "debug" / "pvabridge"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"no pvabridge binary at {binary}: build it (cargo build) and set PVABRIDGE_BIN "
            "(./scripts/test does both)"
        )
    return binary


class Services:
    """The running bridge and detector, and how to ask the bridge's embedded DM service."""

    def __init__(self, binary: Path, workdir: Path, env: dict[str, str], dm_env: dict[str, str]):
        self.binary = binary
        self.workdir = workdir
        self.env = env
        self.dm_env = dm_env

    def dm(self, *args: str) -> object:
        """Run `pvabridge dm ARGS --json` and return its JSON."""
        out = subprocess.run(
            [str(self.binary), "dm", *args, "--json"],
            env=self.dm_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, f"pvabridge dm {' '.join(args)}: {out.stderr}"
        return json.loads(out.stdout)

    def job(self, job_id: str) -> dict:
        """The DM job `job_id`."""
        return self.dm("get-job", "--id", job_id)

    def catalog(self, experiment: str = "pvabridge") -> list[dict]:
        """The DM run catalog entries of `experiment`."""
        return self.dm("list-runs", "--experiment", experiment)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text() if path.exists() else ""


def _first_line(process: subprocess.Popen, what: str, log: Path) -> str:
    """The startup report the process prints first (an empty read: it ended)."""
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} did not start:\n{log.read_text()}")
    return line


@pytest.fixture(scope="session")
def services(pvabridge_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("pvabridge")
    bridge_udp, detector_udp = free_udp_port(), free_udp_port()
    # Clients (these tests, and the DM stages the bridge starts) search only our two servers.
    client = {
        "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{bridge_udp} 127.0.0.1:{detector_udp}",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(free_udp_port()),
        "EPICS_PVA_NAME_SERVERS": "",
        "EPICS_PVA_CONN_TMO": "10",
    }
    saved = {key: os.environ.get(key) for key in client}
    os.environ.update(client)
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PVABRIDGE_HANDSHAKE", "DM_PROC_WEB_SERVICE_URL", "DM_LOGIN_FILE")
    }
    base["PATH"] = f"{pvabridge_bin.parent}{os.pathsep}{base.get('PATH', '')}"

    def server_env(udp: int) -> dict[str, str]:
        return {
            **base,
            "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_PVAS_SERVER_PORT": "0",
            "EPICS_PVAS_BROADCAST_PORT": str(udp),
            "RUST_LOG": "info",
        }

    processes: list[subprocess.Popen] = []

    def start(name: str, args: list[str], udp: int) -> subprocess.Popen:
        log = workdir / f"{name}.log"
        process = subprocess.Popen(
            [str(pvabridge_bin), *args],
            env=server_env(udp),
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        processes.append(process)
        return process

    try:
        bridge = start(
            "bridge",
            ["serve", "--json", "--prefix", SLOT, "--poll-period", "0.2"]
            + ["--embedded-dm", str(workdir / "dm")],
            bridge_udp,
        )
        info = json.loads(_first_line(bridge, "pvabridge serve", workdir / "bridge.log"))
        dm_env = {
            **base,
            "DM_PROC_WEB_SERVICE_URL": info["dmUrl"],
            "DM_LOGIN_FILE": info["dmLoginFile"],
        }
        svc = Services(pvabridge_bin, workdir, base, dm_env)
        svc.start_detector = lambda: start(
            "simdet",
            ["simdet", "--ad-prefix", DETECTOR, "--nx", "32", "--ny", "24", "--dtype", "uint8"]
            + ["--fps", "200", "--frames", "20", "--json"],
            detector_udp,
        )
        workflows = [REPO / "examples" / "bluesky" / "stream-stats.workflow.json"]
        workflows += sorted((HERE / "workflows").glob("*.workflow.json"))
        for workflow in workflows:
            svc.dm("add-workflow", "--replace", str(workflow))
        yield svc
    finally:
        for process in processes:
            stop(process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(workdir / "dm", ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """End a process we started, politely first."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def RE(services):
    return RunEngine({"beamline": "test"}, call_returns_result=True)


@pytest.fixture(scope="session")
def wf(RE):
    """The bridge's run slot, connected through its PVI."""
    with init_devices():
        wf = StreamingWorkflow(SLOT)
    return wf


@pytest.fixture
def det(services, RE):
    """A detector of the test's own (`pvabridge simdet --ad-prefix`), its counter at 0."""
    process = services.start_detector()
    try:
        with init_devices():
            det = SimDetector(DETECTOR)
        yield det
    finally:
        stop(process)


@pytest.fixture
def documents(RE):
    """The documents of the runs a test makes, as (name, doc) pairs."""
    collected: list[tuple[str, dict]] = []
    token = RE.subscribe(lambda name, doc: collected.append((name, doc)))
    yield collected
    RE.unsubscribe(token)
