"""vmgahp installs like a Python package: ``python -m build``, then ``pip install`` of
the wheel into a fresh venv gives a working ``vmgahp`` (docs/admin.md, "Install").

The checkout's tracked sources are copied to a temporary directory (so the build
never writes into the checkout) and built as a release would be: the sdist, then
the wheel from the sdist. Both are checked for what they hold; the wheel is
installed with its dependencies (from the package index or pip's cache;
libvirt-python compiles against libvirt-dev) into a new venv, and the probe runs
from there, outside the checkout, in a clean environment: the console script
and ``python -m vmgahp``.

Marked ``packaging`` (deselect with ``-m "not packaging"``). About 15-20 s with
pip's cache warm (the build ~7 s, the install ~6 s); the first run on a machine
also downloads the dependencies and compiles libvirt-python (~1 min).
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

TOP = Path(__file__).resolve().parents[1]
PACKAGE = TOP / "src" / "vmgahp"
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "*.out")
BUILD_TIMEOUT = 600.0  # the isolated build environment fetches setuptools (cached after the first time)
INSTALL_TIMEOUT = 900.0  # a cold cache downloads htcondor and compiles libvirt-python
PROBE = ['VM_GAHP_VERSION = "0.0.1"', 'VM_Type = "kvm"', "VM_Memory = 512", "VM_Networking = FALSE"]


def _run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, (f"{' '.join(argv)} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _modules() -> set[str]:
    """The package's modules as paths inside the wheel (vmgahp/...)."""
    return {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel, built from a copy of the checkout."""
    pytest.importorskip("build", reason="the build frontend is not installed (pip install -e '.[test]')")
    top = tmp_path_factory.mktemp("wheel")
    source = top / "source"
    shutil.copytree(TOP, source, ignore=NOT_COPIED, symlinks=True)
    out = top / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], BUILD_TIMEOUT)
    return out


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_the_sdist_holds_the_sources_and_docs_and_no_tests(dist: Path) -> None:
    with tarfile.open(_one(dist, "vmgahp-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "MANIFEST.in", "docs/admin.md", "examples/hello-vm/hello.sub"} <= names
    assert {f"src/{m}" for m in _modules()} <= names
    assert "src/vmgahp/drivers/vmware/README.md" in names
    unwanted = [n for n in names if n.split("/")[0] in ("tests", "bench", "scripts", ".cache", ".venv")
                or "__pycache__" in n or n.endswith((".pyc", ".out"))]
    assert not unwanted, unwanted


def test_the_wheel_holds_the_package_alone(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "vmgahp-*-py3-none-any.whl")) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = email.message_from_bytes(wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    package = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert package == _modules() | {"vmgahp/drivers/vmware/README.md"}, package ^ _modules()
    assert "vmgahp = vmgahp.gahp.cli:main" in entry_points
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for dependency in ("libvirt-python", "pydantic", "structlog", "htcondor", "pycdlib"):
        assert dependency in requires, requires
    assert metadata["License-Expression"] == "Apache-2.0"


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its dependencies installed by pip."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(path)], 120.0)
    wheel = _one(dist, "vmgahp-*-py3-none-any.whl")
    _run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], INSTALL_TIMEOUT)
    return path


def _probe_env(cwd: Path) -> dict[str, str]:
    """No trace of the checkout or its venv: what an admin's shell has."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(CONDOR_CONFIG="/dev/null", _CONDOR_VM_MEMORY="512", _CONDOR_VM_KVM_LIBVIRT_URI="test:///default",
               PWD=str(cwd))
    if os.geteuid() == 0:
        env["VMGAHP_USER_UID"] = "1000"  # as root the probe wants the condor uid (HTCondor's own rule)
    return env


@pytest.mark.parametrize("how", ["console script", "python -m vmgahp"])
def test_the_installed_vmgahp_probes(venv: Path, tmp_path: Path, how: str) -> None:
    command = ([str(venv / "bin" / "vmgahp")] if how == "console script"
               else [str(venv / "bin" / "python"), "-m", "vmgahp"])
    done = _run([*command, "-f", "-M", "0", "vmtype", "kvm"], 60.0, cwd=tmp_path, env=_probe_env(tmp_path))
    assert done.stdout.splitlines() == PROBE, done.stdout
    where = _run([str(venv / "bin" / "python"), "-c", "import vmgahp; print(vmgahp.__file__)"], 60.0,
                 cwd=tmp_path, env=_probe_env(tmp_path)).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout's src/
