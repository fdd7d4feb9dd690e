"""The vSphere API simulator (scripts/build-vcsim.sh) as pytest fixtures.

``vcsim`` (vCenter model: one datacenter, a cluster of three hosts plus a standalone
host, so two resource pools), ``vcsim_esx`` (one ESXi host), ``vcsim_idle`` (sessions
expire after 1 s idle) and ``vcsim_delay`` (PowerOnVM_Task answers after 6 s) are
session-scoped: tests share them and must make their own objects (their own folders
and VM names). ``vcsim_factory`` starts private ones, stopped at the test's end -
for tests that kill the simulator.

Each instance listens on 127.0.0.1 on a free port, serves a 2048-bit self-signed
certificate made here with openssl (Go's built-in test certificate is 1024-bit and
OpenSSL 3 refuses it), has one user with a random password, and keeps its
datastores in a private TMPDIR. It is stopped by its pid.

Skips, with the reason, when the Go toolchain, Debian's govmomi source or openssl
is missing; a build that fails for any other reason is an error.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pytest

__all__ = [
    "Vcsim",
    "vcsim",
    "vcsim_binary",
    "vcsim_cert",
    "vcsim_delay",
    "vcsim_esx",
    "vcsim_factory",
    "vcsim_idle",
]

TOP = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = TOP / "scripts" / "build-vcsim.sh"
MISSING_TOOL = 3  # build-vcsim.sh: "a build tool is missing"
START_TIMEOUT = 15.0
USER = "vmgahp-test"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    thumbprint: str  # SHA-256 of the DER certificate, as openssl prints it (AA:BB:...)


@dataclass
class Vcsim:
    """One running simulator."""

    host: str
    port: int
    user: str
    password: str
    ca_file: Path  # the self-signed certificate itself
    thumbprint: str
    pid: int
    tmpdir: Path  # its TMPDIR: the datastore directories are made in here
    log: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}/sdk"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self) -> None:
        """SIGTERM (it removes its datastore directories), SIGKILL after 5 s."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc.wait(5)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _build(out: Path) -> Path:
    done = subprocess.run(["bash", str(BUILD_SCRIPT), str(out)], capture_output=True, text=True, timeout=1200)
    if done.returncode == MISSING_TOOL:
        pytest.skip(f"vcsim: {done.stderr.strip().splitlines()[-1]}")
    if done.returncode != 0:
        raise RuntimeError(f"build-vcsim.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


def _make_cert(directory: Path) -> Cert:
    if shutil.which("openssl") is None:
        pytest.skip("vcsim: openssl is missing (Debian: openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "vcsim.pem", directory / "vcsim.key"
    # A CA-flagged self-signed leaf for 127.0.0.1: usable as its own trust anchor.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
         "-addext", "extendedKeyUsage=serverAuth"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return Cert(cert, key, out.strip().split("=", 1)[1])


def start_vcsim(binary: Path, cert: Cert, workdir: Path, *args: str) -> Vcsim:
    """Start one simulator with extra flags ``args``; returns once it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(os.path.realpath(workdir / "tmp"))
    tmpdir.mkdir(exist_ok=True)
    stdout, log = workdir / "stdout.txt", workdir / "vcsim.log"
    # Special characters: the client must escape it, and it is easy to search for.
    password = f"Pw-{secrets.token_hex(8)}&<x>"
    cmd = [str(binary), "-l", "127.0.0.1:0", "-username", USER, "-password", password,
           "-tlscert", str(cert.cert), "-tlskey", str(cert.key), *args]  # fmt: skip
    with open(stdout, "wb") as out, open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, TMPDIR=str(tmpdir)))  # fmt: skip
    give_up = time.monotonic() + START_TIMEOUT
    while True:
        found = re.search(r"export GOVC_URL=(\S+) GOVC_SIM_PID=(\d+)", stdout.read_text())
        if found:
            break
        if proc.poll() is not None or time.monotonic() > give_up:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            raise RuntimeError(f"vcsimlite {' '.join(args)} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)
    url = urlsplit(found.group(1))
    assert int(found.group(2)) == proc.pid
    return Vcsim(host=url.hostname or "127.0.0.1", port=url.port or 443, user=USER, password=password,
                 ca_file=cert.cert, thumbprint=cert.thumbprint, pid=proc.pid, tmpdir=tmpdir, log=log,
                 proc=proc)  # fmt: skip


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    cache = Path(os.environ.get("VMGAHP_VCSIM_CACHE") or TOP / ".cache" / "vcsim")
    return _build(cache / "vcsimlite")


@pytest.fixture(scope="session")
def vcsim_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return _make_cert(tmp_path_factory.mktemp("vcsim-cert"))


def _session_sim(request: pytest.FixtureRequest, name: str, *args: str) -> Iterator[Vcsim]:
    binary = request.getfixturevalue("vcsim_binary")
    cert = request.getfixturevalue("vcsim_cert")
    workdir = request.getfixturevalue("tmp_path_factory").mktemp(name)
    sim = start_vcsim(binary, cert, workdir, *args)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def vcsim(request: pytest.FixtureRequest) -> Iterator[Vcsim]:
    yield from _session_sim(request, "vcsim")


@pytest.fixture(scope="session")
def vcsim_esx(request: pytest.FixtureRequest) -> Iterator[Vcsim]:
    yield from _session_sim(request, "vcsim-esx", "-esx")


@pytest.fixture(scope="session")
def vcsim_idle(request: pytest.FixtureRequest) -> Iterator[Vcsim]:
    yield from _session_sim(request, "vcsim-idle", "-idle", "1s")


@pytest.fixture(scope="session")
def vcsim_delay(request: pytest.FixtureRequest) -> Iterator[Vcsim]:
    yield from _session_sim(request, "vcsim-delay", "-method-delay", "PowerOnVM_Task=6000")


@pytest.fixture
def vcsim_factory(
    vcsim_binary: Path, vcsim_cert: Cert, tmp_path: Path
) -> Iterator[Callable[..., Vcsim]]:
    """``start(*flags)``: a private simulator, stopped when the test ends."""
    started: list[Vcsim] = []

    def start(*args: str) -> Vcsim:
        sim = start_vcsim(vcsim_binary, vcsim_cert, tmp_path / f"vcsim{len(started)}", *args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
