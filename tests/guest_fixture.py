"""The tiny test guest (tests/guest/make-tiny-guest.sh) as a pytest session fixture.

``tiny_guest`` builds the guest into its cache once (a few milliseconds when the
cache is current: the script compares its own hash) and returns a
:class:`TinyGuest` with the artifact paths and helpers to make per-test disk
copies and read the guest's output back from them. The test is skipped, with the
script's reason, only when a build tool is missing (exit status 3); any other
build failure is an error.

Cache: ``$VMGAHP_GUEST_CACHE``, else ``<checkout>/.cache/tiny-guest``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["GUEST_SCRIPT", "TinyGuest", "guest_cache_dir", "read_guest_file", "tiny_guest"]

TOP = Path(__file__).resolve().parents[1]
GUEST_SCRIPT = TOP / "tests" / "guest" / "make-tiny-guest.sh"
BUILD_TIMEOUT = 900.0
MISSING_TOOL = 3  # the script's exit status for "a build tool is missing"
_EXT_MAGIC_OFFSET = 1080  # s_magic of the ext2/3/4 superblock (1024 + 56)


def guest_cache_dir() -> Path:
    return Path(os.environ.get("VMGAHP_GUEST_CACHE") or TOP / ".cache" / "tiny-guest")


@dataclass(frozen=True)
class TinyGuest:
    dir: Path
    vmlinuz: Path
    initrd: Path
    boot_img: Path  # raw, BIOS-bootable FAT superfloppy with SYSLINUX
    boot_qcow2: Path
    data_img: Path  # blank ext4
    syslinux_cfg: Path
    default_ticks: int

    @classmethod
    def at(cls, directory: Path) -> "TinyGuest":
        env = (directory / "guest.env").read_text()
        ticks = re.search(r"^DEFAULT_TICKS=(\d+)$", env, re.M)
        return cls(
            dir=directory,
            vmlinuz=directory / "vmlinuz",
            initrd=directory / "initrd.img",
            boot_img=directory / "boot.img",
            boot_qcow2=directory / "boot.qcow2",
            data_img=directory / "data.img",
            syslinux_cfg=directory / "syslinux.cfg",
            default_ticks=int(ticks.group(1)) if ticks else 10,
        )

    def boot_disk(
        self,
        dest: Path,
        *,
        ticks: int | None = None,
        fmt: str = "raw",
        kernel_args: str = "",
        owner: tuple[int, int] | None = (1000, 1000),
    ) -> Path:
        """A private copy of the boot disk at ``dest`` (``fmt`` raw or qcow2).

        ``ticks`` replaces ``tiny.ticks`` and ``kernel_args`` are appended in the
        copy's syslinux.cfg. ``owner`` (the job user) is applied when running as root.
        """
        if fmt not in ("raw", "qcow2"):
            raise ValueError(f"fmt must be raw or qcow2, not {fmt!r}")
        with tempfile.TemporaryDirectory(prefix="tiny-disk-") as tmp:
            raw = Path(tmp) / "boot.img"
            shutil.copyfile(self.boot_img, raw)
            if ticks is not None or kernel_args:
                cfg = self.syslinux_cfg.read_text()
                if ticks is not None:
                    cfg = re.sub(r"tiny\.ticks=\d+", f"tiny.ticks={ticks}", cfg)
                if kernel_args:
                    cfg = re.sub(r"^(\s*APPEND .*)$", rf"\1 {kernel_args}", cfg, flags=re.M)
                cfg_file = Path(tmp) / "syslinux.cfg"
                cfg_file.write_text(cfg)
                _run(["mcopy", "-o", "-i", str(raw), str(cfg_file), "::syslinux.cfg"])
            if fmt == "qcow2":
                _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(dest)])
            else:
                shutil.move(raw, dest)
        if owner and os.geteuid() == 0:
            os.chown(dest, *owner)
        return dest

    def data_disk(self, dest: Path, owner: tuple[int, int] | None = (1000, 1000)) -> Path:
        """A private copy of the blank ext4 output disk."""
        shutil.copyfile(self.data_img, dest)
        if owner and os.geteuid() == 0:
            os.chown(dest, *owner)
        return dest


def read_guest_file(image: Path, name: str) -> str | None:
    """File ``name`` from the root of a FAT or ext4 image (raw or qcow2), None if absent.

    Safe while the guest runs (it syncs after each write); qcow2 images are
    converted to a temporary raw copy first.
    """
    image = Path(image)
    with tempfile.TemporaryDirectory(prefix="tiny-read-") as tmp:
        if _is_qcow2(image):
            raw = Path(tmp) / "disk.raw"
            _run(["qemu-img", "convert", "-q", "-U", "-O", "raw", str(image), str(raw)])
            image = raw
        if _is_ext(image):
            done = subprocess.run(
                ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, timeout=60
            )
            if done.returncode != 0 or "File not found" in done.stderr:
                return None
            return done.stdout
        done = subprocess.run(
            ["mtype", "-i", str(image), f"::{name}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
        )
        return done.stdout if done.returncode == 0 else None


def _is_qcow2(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"QFI\xfb"


def _is_ext(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(_EXT_MAGIC_OFFSET)
        return handle.read(2) == b"\x53\xef"


def _run(argv: list[str]) -> None:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def build_tiny_guest(directory: Path | None = None) -> subprocess.CompletedProcess:
    directory = directory or guest_cache_dir()
    return subprocess.run(
        ["bash", str(GUEST_SCRIPT), str(directory)], capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )


@pytest.fixture(scope="session")
def tiny_guest() -> TinyGuest:
    """The tiny guest's artifacts, built (or found current) in the cache."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: cannot build the tiny guest")
    directory = guest_cache_dir()
    done = build_tiny_guest(directory)
    message = (done.stderr or done.stdout).strip()
    if done.returncode == MISSING_TOOL:
        pytest.skip(f"cannot build the tiny guest: {message}")
    if done.returncode != 0:
        pytest.fail(f"{GUEST_SCRIPT} failed ({done.returncode}): {message[-2000:]}")
    for tool in ("mcopy", "mtype", "qemu-img", "debugfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: cannot prepare or read guest disks")
    return TinyGuest.at(directory)


def wait_for_console(uri: str, name: str, text: str, timeout: float = 120.0) -> str:
    """Read the running domain's serial console (its pty) until ``text`` shows;
    return what was read. Boot times vary with the machine's load, so tests
    wait for what the guest says rather than sleeping a fixed time."""
    import select
    import time
    import xml.etree.ElementTree as ET

    import libvirt

    conn = libvirt.open(uri)
    try:
        root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()
    source = root.find("devices/serial/source")
    if source is None or not source.get("path"):
        raise RuntimeError(f"{name} has no pty serial console")
    fd = os.open(source.get("path"), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{name} did not print {text!r} within {timeout} s; console: {seen[-500:]!r}")
            if select.select([fd], [], [], remaining)[0]:
                try:
                    seen += os.read(fd, 65536)
                except BlockingIOError:
                    continue
    finally:
        os.close(fd)
    return seen.decode(errors="replace")
