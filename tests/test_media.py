"""CD-ROM images (vmgahp.vm.cdrom): built with pycdlib, read back, cross-checked.

Every image is built from real files and read back with pycdlib under all
three name sets (Rock Ridge, Joliet, ISO 9660); when isoinfo or xorriso is
installed, an independent reader checks it too. The failure tests check the
wire token and that no image (partial or temporary) is left behind. The last
tests drive the daemon process on libvirt's test hypervisor.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest

from gahp_process import GahpProcess, job_ad
from vmgahp.drivers.libvirt.domain_xml import build_domain_xml
from vmgahp.errors import GahpError
from vmgahp.job.model import Disk, VmJob
from vmgahp.protocol import tokens
from vmgahp.vm import cdrom as media
from vmgahp.vm.cdrom import ISO_NAME, VOLUME_ID, attach_cdrom

UID = GID = 1000  # the job user
LONG_NAME = "A-Very-Long-Mixed-Case-File-Name-With-Dashes-That-Is-Longer-Than-Joliet-Allows.data"
UNICODE_NAME = "Résumé-données-Ünïcode-ß.txt"
ISO_IDENT = re.compile(r"^[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3};1$")
ISO_DIR_IDENT = re.compile(r"^[A-Z0-9_]{1,8}$")


# ----------------------------------------------------------------- helpers
def _scratch() -> Path:
    """A dir the job user can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-media-"))
    os.chmod(path, 0o755)
    return path


def _chown_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), UID, GID)
    os.chown(path, UID, GID)


@pytest.fixture
def scratch() -> Path:
    path = _scratch()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def src(scratch: Path) -> dict[str, bytes]:
    """Input files of every kind; returns {relative path: contents}."""
    root = scratch / "src"
    rng = random.Random(20240611)
    contents = {
        "input.txt": b"hello from the submit side\nline 2\n",
        "job.sh": b"#!/bin/sh\necho running from $CDROM\n",
        "Binary-Data_File.BIN": bytes(rng.getrandbits(8) for _ in range(100 * 1024)),
        LONG_NAME: b"long name\n",
        "Sub-Dir/Nested File.Config": b"[section]\nkey = value\n",
        f"Sub-Dir/{UNICODE_NAME}": "données\n".encode(),
        "Sub-Dir/deeper/empty": b"",
    }
    for rel, data in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "job.sh").chmod(0o755)
    os.symlink("../input.txt", root / "Sub-Dir" / "link-to-input")
    _chown_tree(root)
    return contents


def make_job(work: Path, files: list[Path], **overrides: object) -> VmJob:
    fields: dict[str, object] = dict(
        vm_type="kvm",
        name="alice_example.org_42.0",
        working_dir=str(work),
        memory_mib=128,
        disks=(Disk(path=str(work / "disk.img"), device="vda", permission="w", format="raw"),),
        cdrom_files=tuple(str(f) for f in files),
        cdrom_device="hdc",
        owner_uid=UID,
        owner_gid=GID,
    )
    fields.update(overrides)
    return VmJob(**fields)  # type: ignore[arg-type]


def workdir(scratch: Path) -> Path:
    work = scratch / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, UID, GID)
    return work


def top_files(scratch: Path) -> list[Path]:
    root = scratch / "src"
    return [root / "input.txt", root / "job.sh", root / "Binary-Data_File.BIN", root / LONG_NAME, root / "Sub-Dir"]


def read_iso(path: Path, **where: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, **where)
        return out.getvalue()
    finally:
        iso.close()


def walk(path: Path, kind: str) -> dict[str, list[str]]:
    """{directory: sorted file names} under one name set."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return {d: sorted(files) for d, _, files in iso.walk(**{kind: "/"})}
    finally:
        iso.close()


def leftovers(work: Path) -> list[str]:
    return sorted(name for name in os.listdir(work) if name != "disk.img")


def expect_error(job: VmJob, token: str) -> GahpError:
    with pytest.raises(GahpError) as caught:
        attach_cdrom(job)
    assert caught.value.token == token, caught.value.detail
    return caught.value


# ------------------------------------------------------------------ happy path
def test_no_cdrom_files_leaves_the_job_alone(scratch: Path) -> None:
    work = workdir(scratch)
    job = make_job(work, [], cdrom_device="")
    assert attach_cdrom(job) is job
    assert leftovers(work) == []


def test_rock_ridge_names_and_bytes(scratch: Path, src: dict[str, bytes]) -> None:
    """Rock Ridge keeps every exact name (long, mixed case, Unicode) and byte."""
    work = workdir(scratch)
    attach_cdrom(make_job(work, top_files(scratch)))
    iso = work / ISO_NAME
    tree = walk(iso, "rr_path")
    assert tree == {
        "/": sorted(["input.txt", "job.sh", "Binary-Data_File.BIN", LONG_NAME]),
        "/Sub-Dir": sorted(["Nested File.Config", UNICODE_NAME, "link-to-input"]),
        "/Sub-Dir/deeper": ["empty"],
    }
    for rel, data in src.items():
        assert read_iso(iso, rr_path=f"/{rel}") == data, rel


def test_joliet_names_and_bytes(scratch: Path, src: dict[str, bytes]) -> None:
    """Joliet keeps names up to 64 bytes; a longer one is cut but keeps its extension."""
    work = workdir(scratch)
    attach_cdrom(make_job(work, top_files(scratch)))
    iso = work / ISO_NAME
    tree = walk(iso, "joliet_path")
    root_names = tree["/"]
    assert {"input.txt", "job.sh", "Binary-Data_File.BIN"} <= set(root_names)
    (cut,) = [n for n in root_names if n.startswith("A-Very-Long")]
    assert len(cut.encode()) <= 64 and cut.endswith(".data") and LONG_NAME.startswith(cut[: -len(".data")])
    assert UNICODE_NAME in tree["/Sub-Dir"]
    assert read_iso(iso, joliet_path="/Binary-Data_File.BIN") == src["Binary-Data_File.BIN"]
    assert read_iso(iso, joliet_path=f"/Sub-Dir/{UNICODE_NAME}") == src[f"Sub-Dir/{UNICODE_NAME}"]
    assert read_iso(iso, joliet_path=f"/{cut}") == src[LONG_NAME]


def test_iso9660_identifiers_are_valid_and_unique(scratch: Path) -> None:
    """Plain ISO 9660 names are 8.3 d-characters, unique even when 8.3 forms collide."""
    root = scratch / "src"
    names = [
        "report-2024-january.txt", "report-2024-february.txt", "Report-2024-March.TXT",
        "same.txt", "SAME.txt", ".hidden", "noext", "x.tar.gz", "a b c.d e",
    ]
    (root / "many").mkdir(parents=True)
    for i, name in enumerate(names):
        (root / "many" / name).write_bytes(f"{i}\n".encode())
    (root / "many" / "report-2024-dir").mkdir()
    (root / "many" / "report-2024-dir" / "inner").write_bytes(b"inner\n")
    _chown_tree(root)
    work = workdir(scratch)
    attach_cdrom(make_job(work, [root / "many"]))
    iso = work / ISO_NAME
    idents = walk(iso, "iso_path")
    files = idents["/MANY"]
    assert len(files) == len(set(files)) == len(names)
    assert all(ISO_IDENT.match(f) for f in files), files
    dirs = [d.rsplit("/", 1)[1] for d in idents if d.count("/") == 2]
    assert dirs and all(ISO_DIR_IDENT.match(d) for d in dirs), dirs
    assert walk(iso, "rr_path")["/many"] == sorted(names)
    # Joliet names are unique ignoring case (Windows compares them so).
    joliet = walk(iso, "joliet_path")["/many"]
    assert len({n.casefold() for n in joliet}) == len(names)
    for i, name in enumerate(names):
        assert read_iso(iso, rr_path=f"/many/{name}") == f"{i}\n".encode()


def test_modes_symlinks_and_volume(scratch: Path, src: dict[str, bytes]) -> None:
    """Read-only modes, the executable bit kept, symlinks kept, the fixed volume id."""
    work = workdir(scratch)
    attach_cdrom(make_job(work, top_files(scratch)))
    iso = pycdlib.PyCdlib()
    iso.open(str(work / ISO_NAME))
    try:
        mode = lambda p: iso.get_record(rr_path=p).rock_ridge.get_file_mode()  # noqa: E731 - a one-line helper
        assert stat.S_IMODE(mode("/job.sh")) == 0o555
        assert stat.S_IMODE(mode("/input.txt")) == 0o444
        assert stat.S_IMODE(mode("/Sub-Dir")) == 0o555
        link = iso.get_record(rr_path="/Sub-Dir/link-to-input")
        assert link.is_symlink() and link.rock_ridge.symlink_path() == b"../input.txt"
        assert iso.pvd.volume_identifier.rstrip() == VOLUME_ID.encode()
        assert iso.has_rock_ridge() and iso.has_joliet()
        assert iso.interchange_level == 3
    finally:
        iso.close()


def test_image_file_and_disk(scratch: Path, src: dict[str, bytes]) -> None:
    """The image belongs to the job user, mode 0644; no temporary file stays."""
    work = workdir(scratch)
    job = make_job(work, top_files(scratch))
    new = attach_cdrom(job)
    st = os.stat(work / ISO_NAME)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, GID, 0o644)
    assert st.st_size % 2048 == 0
    assert leftovers(work) == [ISO_NAME]
    assert new.disks[:-1] == job.disks
    assert new.disks[-1] == Disk(path=str(work / ISO_NAME), device="hdc", permission="r", format="raw")
    assert not new.disks[-1].writable and new.disks[-1].is_cdrom
    assert job.disks == new.disks[:-1]  # the input job is untouched (frozen)


def test_domain_xml_shows_a_read_only_cdrom(scratch: Path, src: dict[str, bytes]) -> None:
    work = workdir(scratch)
    new = attach_cdrom(make_job(work, top_files(scratch), cdrom_device="hdd"))
    root = ET.fromstring(build_domain_xml(new, domain_type="qemu"))
    (cdrom,) = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    assert cdrom.find("source").get("file") == str(work / ISO_NAME)
    assert cdrom.find("target").get("dev") == "hdd"
    assert cdrom.find("readonly") is not None
    assert cdrom.find("driver").get("type") == "raw"


def test_an_image_already_there_is_never_overwritten(scratch: Path, src: dict[str, bytes]) -> None:
    """An image that came back with an earlier run keeps its bytes; the new one
    takes the next free name and is the one attached (issue 8: nothing that
    came back is changed)."""
    work = workdir(scratch)
    (work / ISO_NAME).write_bytes(b"stale" * 100000)
    job = attach_cdrom(make_job(work, [scratch / "src" / "input.txt"]))
    assert (work / ISO_NAME).read_bytes() == b"stale" * 100000
    fresh = work / "vmgahp-cdrom.2.iso"
    assert job.disks[-1].path == job.cdrom_built == str(fresh)
    assert read_iso(fresh, rr_path="/input.txt") == src["input.txt"]


def test_a_reused_image_is_attached_as_it_is(scratch: Path, src: dict[str, bytes]) -> None:
    """A restored checkpoint's image is attached unchanged and not rebuilt."""
    work = workdir(scratch)
    first = attach_cdrom(make_job(work, [scratch / "src" / "input.txt"]))
    before = (work / ISO_NAME).read_bytes()
    again = attach_cdrom(make_job(work, [scratch / "src" / "input.txt"]), reuse=first.cdrom_built)
    assert again.disks[-1].path == first.cdrom_built and again.cdrom_built == ""
    assert (work / ISO_NAME).read_bytes() == before
    assert not (work / "vmgahp-cdrom.2.iso").exists()


def test_external_reader_agrees(scratch: Path, src: dict[str, bytes]) -> None:
    """isoinfo (genisoimage) or xorriso reads the same names and bytes."""
    isoinfo, xorriso = shutil.which("isoinfo"), shutil.which("xorriso")
    if not (isoinfo or xorriso):
        pytest.skip("neither isoinfo nor xorriso is installed")
    work = workdir(scratch)
    attach_cdrom(make_job(work, top_files(scratch)))
    iso = str(work / ISO_NAME)
    if isoinfo:
        info = subprocess.run([isoinfo, "-d", "-i", iso], capture_output=True, text=True, check=True).stdout
        assert f"Volume id: {VOLUME_ID}" in info
        assert "Joliet with UCS level 3" in info and "Rock Ridge signatures" in info
        listing = subprocess.run([isoinfo, "-R", "-f", "-i", iso], capture_output=True, check=True).stdout
        paths = set(os.fsdecode(listing).splitlines())
        assert {f"/{rel}" for rel in src} <= paths
        data = subprocess.run([isoinfo, "-R", "-x", "/Binary-Data_File.BIN", "-i", iso],
                              capture_output=True, check=True).stdout
        assert data == src["Binary-Data_File.BIN"]
    if xorriso:
        out = scratch / "extracted"
        subprocess.run([xorriso, "-osirrox", "on", "-indev", iso, "-extract", "/", str(out)],
                       capture_output=True, check=True)
        for rel, data in src.items():
            assert (out / rel).read_bytes() == data, rel
        assert os.readlink(out / "Sub-Dir" / "link-to-input") == "../input.txt"
        assert os.access(out / "job.sh", os.X_OK)


def test_fifo_inside_a_directory_is_skipped(scratch: Path) -> None:
    """Special files inside a listed directory are left out (and never opened)."""
    root = scratch / "src" / "d"
    root.mkdir(parents=True)
    (root / "data").write_bytes(b"x")
    os.mkfifo(root / "pipe")
    _chown_tree(scratch / "src")
    work = workdir(scratch)
    attach_cdrom(make_job(work, [root]))
    assert walk(work / ISO_NAME, "rr_path")["/d"] == ["data"]


# -------------------------------------------------------------------- failures
def test_duplicate_base_names(scratch: Path) -> None:
    """Two files with one base name would collide at the ISO root."""
    a, b = scratch / "a" / "input.txt", scratch / "b" / "input.txt"
    for path in (a, b):
        path.parent.mkdir()
        path.write_text("x")
    work = workdir(scratch)
    error = expect_error(make_job(work, [a, b]), tokens.CANNOT_CREATE_ISO_FILE)
    assert str(a) in error.detail and str(b) in error.detail
    assert leftovers(work) == []


def test_vanished_file(scratch: Path, src: dict[str, bytes]) -> None:
    files = top_files(scratch)
    job = make_job(workdir(scratch), files)
    files[0].unlink()  # after validation (build_job), before the build
    error = expect_error(job, tokens.CANNOT_READ_CDROM_FILE)
    assert str(files[0]) in error.detail
    assert leftovers(Path(job.working_dir)) == []


def test_file_no_longer_readable_by_the_job_user(scratch: Path, src: dict[str, bytes]) -> None:
    """Root could read it, the job user cannot: it stays off the CD."""
    secret = scratch / "src" / "input.txt"
    os.chown(secret, 0, 0)
    secret.chmod(0o600)
    work = workdir(scratch)
    expect_error(make_job(work, [secret]), tokens.CANNOT_READ_CDROM_FILE)
    assert leftovers(work) == []


def test_unreadable_file_inside_a_directory(scratch: Path, src: dict[str, bytes]) -> None:
    secret = scratch / "src" / "Sub-Dir" / "Nested File.Config"
    os.chown(secret, 0, 0)
    secret.chmod(0o600)
    work = workdir(scratch)
    error = expect_error(make_job(work, [scratch / "src" / "Sub-Dir"]), tokens.CANNOT_READ_CDROM_FILE)
    assert "Nested File.Config" in error.detail


def test_top_level_fifo_is_refused(scratch: Path) -> None:
    """A FIFO is refused at once: opening it would hang the START."""
    pipe = scratch / "pipe"
    os.mkfifo(pipe)
    os.chown(pipe, UID, GID)
    work = workdir(scratch)
    expect_error(make_job(work, [pipe]), tokens.CANNOT_READ_CDROM_FILE)


@pytest.mark.parametrize("change", ["unlink", "replace", "grow", "shrink", "chmod"])
def test_file_changes_while_the_image_is_written(
    scratch: Path, src: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A file changed after it was listed, before its bytes are copied."""
    target = scratch / "src" / "Sub-Dir" / "Nested File.Config"
    os.utime(target, (1e9, 1e9))  # an input file written long before the job
    original = pycdlib.PyCdlib.write_fp

    def write_fp(self, outfp, *args, **kwargs):  # type: ignore[no-untyped-def]
        if change == "unlink":
            target.unlink()
        elif change == "replace":
            target.unlink()
            target.write_bytes(src["Sub-Dir/Nested File.Config"])
        elif change == "grow":
            with open(target, "ab") as handle:
                handle.write(b"more\n")
        elif change == "shrink":
            os.truncate(target, 3)
        else:
            os.chown(target, 0, 0)
            target.chmod(0o600)
        return original(self, outfp, *args, **kwargs)

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", write_fp)
    work = workdir(scratch)
    error = expect_error(make_job(work, top_files(scratch)), tokens.CANNOT_READ_CDROM_FILE)
    assert "Nested File.Config" in error.detail
    assert leftovers(work) == []


def test_working_dir_not_writable(scratch: Path, src: dict[str, bytes]) -> None:
    """Root can write anywhere, so the working dir sits under a regular file."""
    blocker = scratch / "a-file"
    blocker.write_text("not a directory")
    job = make_job(blocker / "work", [scratch / "src" / "input.txt"])
    error = expect_error(job, tokens.CANNOT_CREATE_ISO_FILE)
    assert "a-file" in error.detail
    assert blocker.read_text() == "not a directory"


def test_disk_full_leaves_nothing_behind(scratch: Path, src: dict[str, bytes]) -> None:
    """A write failure half-way (EFBIG from RLIMIT_FSIZE, like ENOSPC) removes the partial image.

    Run in a child process: the file-size limit would hit pytest's own files.
    """
    work = workdir(scratch)
    (work / ISO_NAME).write_bytes(b"previous image")
    job = make_job(work, top_files(scratch))
    script = textwrap.dedent("""\
        import resource, signal, sys
        from vmgahp.errors import GahpError
        from vmgahp.job.model import VmJob
        from vmgahp.vm.cdrom import attach_cdrom
        job = VmJob.model_validate_json(sys.stdin.read())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a failing write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            attach_cdrom(job)
        except GahpError as exc:
            print(exc.token)
            print(exc.detail)
        """)
    done = subprocess.run([sys.executable, "-c", script], input=job.model_dump_json(), capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(media.__file__).parents[2])})
    lines = done.stdout.splitlines()
    assert lines and lines[0] == tokens.CANNOT_CREATE_ISO_FILE, done.stdout + done.stderr
    assert "too large" in lines[1].lower()
    assert leftovers(work) == [ISO_NAME]
    assert (work / ISO_NAME).read_bytes() == b"previous image"  # the old image is untouched


def test_cdrom_device_already_used_by_a_disk(scratch: Path, src: dict[str, bytes]) -> None:
    """The driver refuses a vm_disk on the CD-ROM's device while it reads the ad,
    with its own token, before any image is built."""
    from helpers import hypervisor
    from vmgahp.job.jobad import JobAd

    work = workdir(scratch)
    (work / "disk.img").write_bytes(b"\0" * 512)
    ad = JobAd([f'VM_WORKING_DIR = "{work}"', 'VMPARAM_vm_Disk = "disk.img:hdc:w"',
                f'VMPARAM_CDROM_Files = "{scratch / "src" / "input.txt"}"'])
    base = make_job(work, [], disks=())
    with pytest.raises(GahpError) as info:
        hypervisor("kvm").read_job(ad, base, None)
    assert info.value.token == tokens.KVM_INVALID_DISK_PARAM and "the CD-ROM device" in info.value.detail
    assert leftovers(work) == []


def test_size_of_a_small_image(scratch: Path, src: dict[str, bytes]) -> None:
    """A handful of small files (about 100 KB) make a small image (its build time is
    bench/'s business, not a test's)."""
    work = workdir(scratch)
    job = attach_cdrom(make_job(work, top_files(scratch)))
    assert (Path(job.cdrom_built).stat().st_size) < 400 * 1024


# ------------------------------------------------------------ daemon process
@pytest.fixture
def gahp_work() -> Path:
    """A scratch dir as on an execute node: 0755, the job's files owned by uid 1000."""
    path = _scratch()
    with open(path / "disk.img", "wb") as handle:
        handle.truncate(1 << 20)
    (path / "input.txt").write_text("input for the guest\n")
    (path / "job.sh").write_text("#!/bin/sh\ncat $CDROM/input.txt > $OUT/result.txt\n")
    (path / "job.sh").chmod(0o755)
    for name in ("disk.img", "input.txt", "job.sh"):
        os.chown(path / name, UID, GID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gahp(work: Path) -> GahpProcess:
    gahp = GahpProcess(work)
    gahp.handshake()
    return gahp


def test_daemon_starts_a_vm_with_its_cdrom(gahp_work: Path) -> None:
    gahp = _gahp(gahp_work)
    try:
        gahp.send_ad(job_ad(gahp_work, VMPARAM_CDROM_Files='"input.txt,job.sh"'))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        iso = gahp_work / ISO_NAME
        assert iso.stat().st_uid == UID
        assert walk(iso, "rr_path") == {"/": ["input.txt", "job.sh"]}
        assert read_iso(iso, rr_path="/job.sh") == (gahp_work / "job.sh").read_bytes()
        assert "cdrom_built" in (gahp_work / "vmgahp.log").read_text()
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
    finally:
        gahp.kill()


def test_daemon_refuses_a_missing_cdrom_file(gahp_work: Path) -> None:
    gahp = _gahp(gahp_work)
    try:
        gahp.send_ad(job_ad(gahp_work, VMPARAM_CDROM_Files='"input.txt,missing.dat"'))
        assert gahp.call("CONDOR_VM_START", "kvm") == (False, tokens.CANNOT_READ_CDROM_FILE)
        assert not (gahp_work / ISO_NAME).exists()
        assert gahp.reply("QUIT") == "S"
        assert gahp.wait() == 0
    finally:
        gahp.kill()
