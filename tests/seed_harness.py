"""The cheap real things ``tests/seed/test_seed*.py`` run: the probe as the startd
runs it, and ``vmgahp run`` of a tiny submit file on libvirt's test hypervisor.

``run_job`` drives the installed ``vmgahp run`` (the local starter, the real
daemon behind it) with ``-v`` and ``--keep-scratch``, so a test sees what the
starter sent (the job ad of the ``CLASSAD`` block), the gahp's JSON log (with
``VM_GAHP_DEBUG = D_FULLDEBUG`` the domain XML the gahp started) and what came
back in the output directory. On ``test:///default`` a VM never powers off,
so each run ends by ``--max-wall`` (a vacate), exit status 124.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import classad2

TOP = Path(__file__).resolve().parents[1]
VMGAHP = TOP / ".venv" / "bin" / "vmgahp"
TEST_URI = "test:///default"


def clean_env(**knobs: object) -> dict[str, str]:
    """No pool configuration, the test hypervisor, full debug logging; knobs as ``_CONDOR_``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_CONFIG"))}
    env.update(
        CONDOR_CONFIG="/dev/null",
        _CONDOR_VM_MEMORY="1024",
        _CONDOR_VM_KVM_LIBVIRT_URI=TEST_URI,
        _CONDOR_VM_XEN_LIBVIRT_URI=TEST_URI,
        _CONDOR_VM_GAHP_DEBUG="D_FULLDEBUG",
    )
    for name, value in knobs.items():
        if value is None:
            env.pop(f"_CONDOR_{name}", None)
        else:
            env[f"_CONDOR_{name}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


# ------------------------------------------------------------------- probe
@dataclass
class Probe:
    code: int
    lines: list[str]
    ad: classad2.ClassAd  # what the startd builds from the lines
    events: list[dict]


def probe(tmp: Path, vm_type: str = "kvm", **knobs: object) -> Probe:
    """``vmgahp -f -M 0 vmtype TYPE`` as the startd runs it (vmuniverse_mgr.cpp:366-558):
    stdout only, each line inserted into the machine ad with the old ClassAd parser."""
    log = tmp / f"probe-{vm_type}.log"
    log.unlink(missing_ok=True)
    env = clean_env(VM_GAHP_LOG=log, VM_GAHP_LOG_FORMAT="json", **knobs)
    env["VMGAHP_USER_UID"] = _condor_uid()  # the startd's: condor's uid (vmuniverse_mgr.cpp)
    done = subprocess.run([sys.executable, "-m", "vmgahp", "-f", "-M", "0", "vmtype", vm_type],
                          capture_output=True, text=True, env=env, timeout=30)
    ad = classad2.ClassAd()
    lines = done.stdout.splitlines()
    for line in lines:
        try:
            ad.update(classad2.parseOne(line, classad2.ParserType.Old))
        except (ValueError, classad2.ClassAdException):
            pass  # the startd skips a line it cannot parse
    return Probe(done.returncode, lines, ad, read_log(log))


def _condor_uid() -> str:
    if os.geteuid() != 0:
        return str(os.geteuid())
    for name in ("condor", "nobody"):
        try:
            return str(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return "65534"


# ---------------------------------------------------------------- vmgahp run
@dataclass
class Run:
    code: int
    out: str  # what vmgahp run printed
    conversation: str  # -v: the starter <-> gahp lines
    ad: dict[str, str]  # the job ad the starter sent, by attribute
    events: list[dict]  # the gahp's log
    scratch: Path
    output: Path
    xml: ET.Element | None = field(default=None)

    def event(self, name: str) -> dict | None:
        return next((e for e in self.events if e.get("event") == name), None)


def write_job(directory: Path, submit: str, files: dict[str, int | bytes] | None = None) -> Path:
    """A submit file and its inputs (an int is a sparse file of that size)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, content in ({"disk.img": 8 << 20} if files is None else files).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as handle:
                handle.truncate(content)
        else:
            path.write_bytes(content)
        os.chmod(path, 0o644)
    sub = directory / "job.sub"
    sub.write_text(textwrap.dedent(submit))
    return sub


def run_job(base: Path, submit: str, files: dict[str, int | bytes] | None = None, *, name: str = "job",
            knobs: dict[str, object] | None = None, args: tuple[str, ...] = (), max_wall: float | None = 0.5,
            sub: Path | None = None, timeout: float = 90) -> Run:
    """``vmgahp run`` of ``submit`` in ``base/name``; the scratch dir is kept in ``base/name.scratch``."""
    if sub is None:
        sub = write_job(base / name, submit, files)
    root = base / f"{name}.scratch"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    output = base / f"{name}.out"
    argv = [str(VMGAHP), "run", str(sub), "-v", "--keep-scratch", "--scratch-root", str(root),
            "--status-interval", "0.2", "--output", str(output), *args]
    if max_wall is not None:
        argv += ["--max-wall", str(max_wall)]
    done = subprocess.run(argv, capture_output=True, text=True, env=clean_env(**(knobs or {})), timeout=timeout)
    scratches = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    scratch = scratches[-1] if scratches else root
    events = read_log(scratch / "_vmgahp_run.gahp.log")
    run = Run(done.returncode, done.stdout, done.stderr, job_ad(done.stderr), events, scratch, output)
    xml = run.event("domain_xml")
    if xml is not None:
        run.xml = ET.fromstring(xml["xml"])
    return run


def job_ad(conversation: str) -> dict[str, str]:
    """The ``CLASSAD`` block the starter sent (``> Name = value`` lines up to ``CLASSAD_END``)."""
    ad: dict[str, str] = {}
    inside = False
    for line in conversation.splitlines():
        if line == "> CLASSAD":
            inside = True
        elif line == "> CLASSAD_END":
            break
        elif inside and line.startswith("> "):
            name, _, value = line[2:].partition(" = ")
            ad[name] = value
    return ad


# ------------------------------------------------------------- a real guest
def hello_run(tiny_guest, tmp_path_factory, name: str, extra: str = "", cluster: int = 7301) -> tuple[Run, Path]:
    """examples/hello-vm on a real guest (the machine's libvirtd), ``extra`` added to
    its submit file; the input image is kept to compare with what came back."""
    base = tmp_path_factory.mktemp(f"seed-{name}")
    for directory in (base, base.parent, base.parent.parent):
        os.chmod(directory, 0o755)  # the job user reaches the shared scratch root through them
    work = base / name
    shutil.copytree(TOP / "examples" / "hello-vm", work)
    text = (work / "hello.sub").read_text()
    text = text.replace("guest_dir = ../../.cache/tiny-guest", f"guest_dir = {tiny_guest.dir}")
    (work / "hello.sub").write_text(text.replace("\nqueue", f"\n{extra}\nqueue"))
    run = run_job(base, "", name=name, sub=work / "hello.sub", max_wall=None, timeout=600,
                  args=("--cluster-id", str(cluster)),
                  knobs={"VM_KVM_LIBVIRT_URI": "qemu:///system", "VM_KVM_DOMAIN_TYPE": "qemu"})
    return run, tiny_guest.boot_img
