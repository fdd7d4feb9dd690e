"""What a VM's disks open, checked as the job user, and given back after the VM
(src/vmgahp/drivers/libvirt/images.py), on real image files made with qemu-img.

The check matters most under a stock libvirt, whose DAC driver chowns every
layer of a backing chain to libvirt-qemu: a job's qcow2 must not be able to
name a file its user cannot read (tests/test_stock_libvirt.py shows it with a
real guest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from vmgahp.drivers.base import JobImageError
from vmgahp.drivers.libvirt import images

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")

UID = GID = 1000
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="checks as another user need root (chown)")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def job(work: Path, *disks: tuple[str, str], uid: int | None = UID) -> SimpleNamespace:
    """The parts of a VmJob the check reads; disks as (path, format)."""
    return SimpleNamespace(
        working_dir=str(work), owner_uid=uid, owner_gid=uid,
        disks=tuple(SimpleNamespace(path=str(p), format=f, device=f"vd{chr(97 + i)}")
                    for i, (p, f) in enumerate(disks)),
    )


def raw(path: Path, owner: tuple[int, int] = (UID, GID), mode: int = 0o644) -> Path:
    path.write_bytes(b"\0" * 65536)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def overlay(path: Path, backing: str, backing_format: str = "raw", owner: tuple[int, int] = (UID, GID)) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-F", backing_format, "-b", backing, str(path), "1M")
    os.chown(path, *owner)
    return path


@pytest.fixture
def top_dir() -> Iterator[Path]:
    """Under /tmp, not pytest's tmp_path: the job user must reach the files (pytest-of-root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-images-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def work(top_dir: Path) -> Path:
    """The scratch dir: the job user's, 0755."""
    path = top_dir / "scratch"
    path.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(path, UID, GID)
    return path


@pytest.fixture
def host(top_dir: Path) -> Path:
    """A host directory beside it, root's, 0755."""
    path = top_dir / "host"
    path.mkdir(mode=0o755)
    return path


@as_root
def test_a_chain_in_the_working_dir_is_recorded_with_its_owners(work: Path) -> None:
    base = raw(work / "base.img", mode=0o600)
    middle = overlay(work / "middle.qcow2", "base.img")  # relative, as vmgahp's overlays name their base
    top = overlay(work / "top.qcow2", str(middle), "qcow2")
    files = images.check_images(job(work, (top, "qcow2")))
    assert files.owners == {str(top): (UID, GID), str(middle): (UID, GID), str(base): (UID, GID)}


@as_root
def test_a_raw_disk_or_one_without_a_format_opens_nothing_below_it(work: Path, host: Path) -> None:
    secret = raw(host / "secret.img", owner=(0, 0), mode=0o600)
    qcow = overlay(work / "disk.qcow2", str(secret))
    # Without a format libvirt opens the file as raw: its header names nothing.
    assert set(images.check_images(job(work, (qcow, ""))).owners) == {str(qcow)}
    assert set(images.check_images(job(work, (raw(work / "plain.img"), "raw"))).owners) == {str(work / "plain.img")}


@as_root
def test_a_backing_file_the_job_user_cannot_read_is_refused(work: Path, host: Path) -> None:
    secret = raw(host / "secret.img", owner=(0, 0), mode=0o600)
    evil = overlay(work / "evil.qcow2", str(secret))
    with pytest.raises(JobImageError, match="the backing file of .*evil.qcow2.* is not readable by the job user"):
        images.check_images(job(work, (evil, "qcow2")))
    # ... however deep it hides.
    upper = overlay(work / "upper.qcow2", str(evil), "qcow2")
    with pytest.raises(JobImageError, match="secret.img"):
        images.check_images(job(work, (upper, "qcow2")))


@as_root
def test_a_readable_backing_file_elsewhere_is_allowed_but_not_the_jobs(work: Path, host: Path) -> None:
    shared = raw(host / "shared.img", owner=(0, 0), mode=0o644)  # a base image on a shared filesystem
    top = overlay(work / "top.qcow2", str(shared))
    assert set(images.check_images(job(work, (top, "qcow2"))).owners) == {str(top)}


@pytest.mark.parametrize("backing", [
    'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}',
    "nbd://127.0.0.1:10809/export",
])
def test_a_backing_file_that_is_not_a_local_file_is_refused(work: Path, backing: str) -> None:
    top = overlay(work / "top.qcow2", backing, owner=(os.geteuid(), os.getegid()))
    with pytest.raises(JobImageError, match="not a local file"):
        images.check_images(job(work, (top, "qcow2"), uid=None))


@as_root
def test_an_external_data_file_the_job_user_cannot_read_is_refused(work: Path, host: Path) -> None:
    secret = raw(host / "secret.img", owner=(0, 0), mode=0o600)
    top = work / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", str(top), "64K")
    os.chown(top, UID, GID)
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    with pytest.raises(JobImageError, match="a data or extent file of .*top.qcow2.* is not readable"):
        images.check_images(job(work, (top, "qcow2")))


@as_root
def test_a_vmdk_extent_the_job_user_cannot_read_is_refused(work: Path, host: Path) -> None:
    secret = raw(host / "secret.img", owner=(0, 0), mode=0o600)
    descriptor = work / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(descriptor), "64K")
    text = descriptor.read_text().replace('"disk-flat.vmdk"', f'"{secret}"')
    descriptor.write_text(text)
    os.chown(descriptor, UID, GID)
    with pytest.raises(JobImageError, match="secret.img.*a data or extent file"):
        images.check_images(job(work, (descriptor, "vmdk")))


def test_a_missing_backing_file_is_the_jobs_image_problem(work: Path) -> None:
    top = overlay(work / "top.qcow2", str(work / "gone.img"), owner=(os.geteuid(), os.getegid()))
    with pytest.raises(JobImageError, match="gone.img"):
        images.check_images(job(work, (top, "qcow2"), uid=None))


@as_root
def test_give_back_restores_the_recorded_owners_and_nothing_else(work: Path, host: Path) -> None:
    base = raw(work / "base.img")
    top = overlay(work / "top.qcow2", "base.img")
    files = images.check_images(job(work, (top, "qcow2")))
    # What a stock libvirt leaves after the VM: the backing file is libvirt-qemu's.
    os.chown(base, 999, 994)
    os.chown(top, 999, 994)
    # A file that became a symlink meanwhile is not followed.
    target = raw(host / "elsewhere.img", owner=(0, 0))
    os.replace(work / "top.qcow2", work / "moved.qcow2")
    os.symlink(target, work / "top.qcow2")
    files.give_back()
    assert (base.stat().st_uid, base.stat().st_gid) == (UID, GID)
    assert target.stat().st_uid == 0 and (work / "moved.qcow2").stat().st_uid == 999
    files.give_back()  # idempotent
    assert base.stat().st_uid == UID
