"""CD-ROM images for ``VMPARAM_CDROM_Files`` (``vm_cdrom_files`` in submit).

:func:`attach_cdrom` packs the job's CD-ROM files into one ISO 9660 image and
adds it to the job as a read-only CD-ROM disk on ``job.cdrom_device`` (IDE
``hdc`` by default, which every guest kernel can read). A list of exactly one
``.iso`` file is that CD-ROM: it is attached as it is, not packed.

The image:

* is ``vmgahp-cdrom.iso`` in the job's working directory (``ISO_NAME``); it
  is written to a temporary name and renamed into place, so a failed build
  never leaves a partial image, and it belongs to the job's owner;
* has the volume id ``VMGAHP_JOB`` (``VOLUME_ID``), so a guest can find it
  with ``mount LABEL=VMGAHP_JOB`` (or mount ``/dev/sr0``);
* holds every listed file at its root under its own base name; a listed
  directory is copied recursively, symlinks inside it stay symlinks (Rock
  Ridge), sockets, FIFOs and devices inside it are skipped;
* carries three name sets: Rock Ridge 1.09 (exact names and the executable
  bit - what Linux guests use), Joliet level 3 (long Unicode names, at most
  64 bytes, for Windows guests) and plain ISO 9660 level 3 identifiers in
  8.3 form (A-Z, 0-9, ``_``; made unique per directory).

Files are read as root but only when the job's owner could read them (mode
bits, as :mod:`vmgahp.job.access`), so a job cannot copy host files it has no
right to onto its CD-ROM. Each file is opened only while pycdlib copies its
bytes, in 1 MiB blocks: memory stays flat for multi-GB files and a tree of
thousands of files needs one descriptor at a time. A file that vanished,
became unreadable, was replaced or changed size before its bytes were copied
fails the START with ``VMGAHP_ERR_CANNOT_READ_CDROM_FILE``; any other
failure (duplicate base names, pycdlib, the working dir, a full disk) with
``VMGAHP_ERR_CANNOT_CREATE_ISO_FILE``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from vmgahp import log
from vmgahp.errors import GahpError
from vmgahp.job.access import JobUser, ancestors_searchable, can_access, permits
from vmgahp.job.model import CDROM_IMAGE as ISO_NAME
from vmgahp.job.model import Disk
from vmgahp.job.workdir import fsync_dir
from vmgahp.protocol import tokens
from vmgahp.vm.iso_names import assign_names, rr_name

if TYPE_CHECKING:
    from vmgahp.job.model import VmJob

VOLUME_ID = "VMGAHP_JOB"
COPY_BLOCK = 1 << 20
MAX_DEPTH = 64  # nesting of a listed directory; deeper is a loop or a mistake
FILE_MODE = stat.S_IFREG | 0o444
DIR_MODE = stat.S_IFDIR | 0o555


class _Unreadable(Exception):
    """A CD-ROM file could not be read (mapped to CANNOT_READ_CDROM_FILE)."""


@dataclass
class _Node:
    source: str  # path on the host
    name: str  # name on the host: the Rock Ridge name
    kind: str  # "file", "dir" or "symlink"
    size: int = 0
    mode: int = 0
    ident: tuple[int, int, int] = (0, 0, 0)  # (st_dev, st_ino, st_mtime_ns) when collected
    nofollow: bool = False  # inside a listed directory: never follow a symlink
    target: str = ""  # symlink target
    children: list[_Node] = field(default_factory=list)
    iso_path: str = ""
    joliet_path: str = ""
    rr_name: str = ""


def attach_cdrom(job: VmJob, reuse: str | None = None) -> VmJob:
    """Build the job's ISO image and add it as a read-only CD-ROM disk.

    ``reuse`` is the image a restored checkpoint came back with: the guest
    may have it mounted, so it is attached as it is, not rebuilt. A new image
    never replaces a file already there (one that came back with an earlier
    run keeps its name; the new one takes the next free name).

    Returns ``job`` unchanged when it lists no CD-ROM files; raises
    :class:`GahpError` with ``CANNOT_READ_CDROM_FILE`` or
    ``CANNOT_CREATE_ISO_FILE``.
    """
    if not job.cdrom_files:
        return job
    if not os.path.isabs(job.working_dir):
        raise GahpError(tokens.CANNOT_CREATE_ISO_FILE, f"working dir {job.working_dir!r} is not an absolute path")
    device = job.cdrom_device  # the driver's choice (spec: hdc, or xvdc for a Xen PV guest)
    if reuse:
        log.get().info("cdrom_reused", path=reuse, device=device)
        disk = Disk(path=reuse, device=device, permission="r", format="raw")
        return job.model_copy(update={"disks": job.disks + (disk,)})
    user = None
    if job.owner_uid is not None:
        user = JobUser(job.owner_uid, job.owner_gid if job.owner_gid is not None else job.owner_uid)
    if len(job.cdrom_files) == 1 and job.cdrom_files[0].lower().endswith(".iso"):
        return _attach_given_iso(job, job.cdrom_files[0], user)
    iso_path = _free_name(job.working_dir)
    began = time.monotonic()
    try:
        roots = _collect(job.cdrom_files, user)
    except _Unreadable as exc:
        raise GahpError(tokens.CANNOT_READ_CDROM_FILE, str(exc)) from exc
    assign_names(roots, "", "")
    files, size = _build(roots, iso_path, job, user)
    log.get().info(
        "cdrom_built", path=iso_path, device=device, files=files, bytes=size,
        seconds=round(time.monotonic() - began, 4),
    )
    disk = Disk(path=iso_path, device=device, permission="r", format="raw")
    return job.model_copy(update={"disks": job.disks + (disk,), "cdrom_built": iso_path})


def _attach_given_iso(job: VmJob, path: str, user: JobUser | None) -> VmJob:
    """One ``.iso`` file is the CD-ROM itself (the C++ gahp's ``m_has_iso``):
    packing it into another image would hide its contents from the guest."""
    try:
        node = _top_node(path, user)
    except _Unreadable as exc:
        raise GahpError(tokens.CANNOT_READ_CDROM_FILE, str(exc)) from exc
    if node.kind != "file":
        raise GahpError(tokens.CANNOT_READ_CDROM_FILE, f"CD-ROM image {path} is not a regular file")
    log.get().info("cdrom_given", path=path, device=job.cdrom_device, bytes=node.size)
    disk = Disk(path=path, device=job.cdrom_device, permission="r", format="raw")
    return job.model_copy(update={"disks": job.disks + (disk,)})


def _free_name(working_dir: str) -> str:
    path = os.path.join(working_dir, ISO_NAME)
    n = 1
    while os.path.lexists(path):
        n += 1
        path = os.path.join(working_dir, f"vmgahp-cdrom.{n}.iso")
    return path


# ---------------------------------------------------------------- collecting
def _collect(paths: tuple[str, ...], user: JobUser | None) -> list[_Node]:
    by_name: dict[str, str] = {}
    for path in paths:
        name = os.path.basename(os.path.normpath(path))
        if not name or name in (".", ".."):
            raise GahpError(tokens.CANNOT_CREATE_ISO_FILE, f"CD-ROM file {path!r} has no base name")
        if name in by_name:
            # Both would land at the ISO root under the same name.
            raise GahpError(
                tokens.CANNOT_CREATE_ISO_FILE,
                f"CD-ROM files {by_name[name]!r} and {path!r} have the same base name {name!r}",
            )
        by_name[name] = path
    return [_top_node(path, user) for path in paths]


def _top_node(path: str, user: JobUser | None) -> _Node:
    name = os.path.basename(os.path.normpath(path))
    if not os.path.isabs(path):
        raise _Unreadable(f"CD-ROM file {path!r} is not an absolute path")
    try:
        st = os.stat(path)  # a listed symlink is followed, as job.py validated it
    except OSError as exc:
        raise _Unreadable(f"CD-ROM file {path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        if not _ancestors_searchable(path, user):
            raise _Unreadable(f"CD-ROM directory {path} is not reachable by the job user")
        return _dir_node(path, name, st, user, 1)
    if not stat.S_ISREG(st.st_mode):
        raise _Unreadable(f"CD-ROM file {path} is not a regular file or a directory")
    if not can_access(path, user):
        raise _Unreadable(f"CD-ROM file {path} is not readable by the job user")
    return _file_node(path, name, st, nofollow=False)


def _file_node(path: str, name: str, st: os.stat_result, nofollow: bool) -> _Node:
    return _Node(source=path, name=name, kind="file", size=st.st_size, mode=st.st_mode,
                 ident=_ident(st), nofollow=nofollow)


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    # The inode number alone misses a file deleted and written anew (the
    # number is often reused); its mtime does not match.
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def _dir_node(path: str, name: str, st: os.stat_result, user: JobUser | None, depth: int) -> _Node:
    if depth > MAX_DEPTH:
        raise GahpError(tokens.CANNOT_CREATE_ISO_FILE, f"CD-ROM directory {path} is nested deeper than {MAX_DEPTH}")
    if not _readable(st, user, directory=True, path=path):
        raise _Unreadable(f"CD-ROM directory {path} is not readable by the job user")
    node = _Node(source=path, name=name, kind="dir", mode=st.st_mode, ident=_ident(st))
    try:
        with os.scandir(path) as listing:
            names = sorted(entry.name for entry in listing)
    except OSError as exc:
        raise _Unreadable(f"CD-ROM directory {path}: {exc.strerror}") from exc
    for child_name in names:
        child = os.path.join(path, child_name)
        try:
            cst = os.lstat(child)  # inside a directory nothing is followed
            if stat.S_ISLNK(cst.st_mode):
                node.children.append(_Node(source=child, name=child_name, kind="symlink",
                                           target=os.readlink(child)))
                continue
        except OSError as exc:
            raise _Unreadable(f"CD-ROM file {child}: {exc.strerror}") from exc
        if stat.S_ISDIR(cst.st_mode):
            node.children.append(_dir_node(child, child_name, cst, user, depth + 1))
        elif stat.S_ISREG(cst.st_mode):
            if not _readable(cst, user, directory=False, path=child):
                raise _Unreadable(f"CD-ROM file {child} is not readable by the job user")
            node.children.append(_file_node(child, child_name, cst, nofollow=True))
        else:
            log.get().warning("cdrom_file_skipped", path=child, detail="not a file, directory or symlink")
    return node


def _readable(st: os.stat_result, user: JobUser | None, *, directory: bool, path: str) -> bool:
    want = 5 if directory else 4  # a directory must be listable and searchable
    if user is None:
        return os.access(path, os.R_OK | (os.X_OK if directory else 0))
    return permits(st, user, want)


def _ancestors_searchable(path: str, user: JobUser | None) -> bool:
    if user is None:
        return True  # opening as ourselves checks this
    return ancestors_searchable(os.path.realpath(path), user)


# ------------------------------------------------------------------ building
class _Source:
    """One file's bytes for pycdlib, opened only while pycdlib copies them.

    On open it checks that the path still names the inode collected, a
    regular file the job user may read, of the same size; while reading, that
    the file neither shrank nor grew. Any mismatch raises ``_Unreadable``.
    """

    mode = "rb"  # pycdlib only accepts binary file objects

    def __init__(self, node: _Node, user: JobUser | None) -> None:
        self.node = node
        self._user = user
        self._fd: int | None = None
        self._pos = 0
        self.done = False

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        node = self.node
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if node.nofollow else 0)
        try:
            if not node.nofollow and not stat.S_ISREG(os.stat(node.source).st_mode):
                raise _Unreadable(f"CD-ROM file {node.source} is no longer a regular file")
            fd = os.open(node.source, flags)
        except OSError as exc:
            raise _Unreadable(f"CD-ROM file {node.source}: {exc.strerror}") from exc
        self._fd = fd
        st = os.fstat(fd)
        if _ident(st) != node.ident or not stat.S_ISREG(st.st_mode):
            raise _Unreadable(f"CD-ROM file {node.source} was replaced while the image was built")
        if not _readable(st, self._user, directory=False, path=node.source):
            raise _Unreadable(f"CD-ROM file {node.source} is no longer readable by the job user")
        if st.st_size != node.size:
            raise _Unreadable(f"CD-ROM file {node.source} changed size while the image was built")
        return fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = os.lseek(self._open(), offset, whence)
        if self.node.size == 0:
            self._finish()
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        fd = self._open()
        left = self.node.size - self._pos
        want = left if size < 0 else min(size, left)
        parts = []
        try:
            while want > 0:
                chunk = os.read(fd, want)
                if not chunk:
                    raise _Unreadable(f"CD-ROM file {self.node.source} shrank while the image was built")
                parts.append(chunk)
                want -= len(chunk)
                self._pos += len(chunk)
        except OSError as exc:
            raise _Unreadable(f"CD-ROM file {self.node.source}: {exc.strerror}") from exc
        if self._pos >= self.node.size:
            self._finish()
        return b"".join(parts)

    def _finish(self) -> None:
        # The whole size was copied: if the file has more now, the image
        # holds a truncated copy, which the guest must not get.
        fd = self._open()
        if os.fstat(fd).st_size != self.node.size:
            raise _Unreadable(f"CD-ROM file {self.node.source} changed size while the image was built")
        self.done = True
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _walk(nodes: list[_Node]) -> Iterator[_Node]:
    for node in nodes:
        yield node  # parents before children: pycdlib needs the directory first
        if node.kind == "dir":
            yield from _walk(node.children)


def _build(roots: list[_Node], iso_path: str, job: VmJob, user: JobUser | None) -> tuple[int, int]:
    """Write the image to ``iso_path``; return (files, bytes)."""
    import pycdlib  # deferred: only jobs with CD-ROM files pay for the import
    from pycdlib.pycdlibexception import PyCdlibException

    sources: list[_Source] = []
    iso = pycdlib.PyCdlib()
    tmp = ""
    try:
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID, app_ident_str="VMGAHP")
        for node in _walk(roots):
            if node.kind == "dir":
                iso.add_directory(node.iso_path, rr_name=node.rr_name, joliet_path=node.joliet_path,
                                  file_mode=DIR_MODE)
            elif node.kind == "symlink":
                iso.add_symlink(symlink_path=f"{node.iso_path};1", rr_symlink_name=node.rr_name,
                                rr_path=rr_name(node.target))
            else:
                source = _Source(node, user)
                sources.append(source)
                # Keep the executable bit: a job script must run from the CD.
                mode = FILE_MODE | (0o111 if node.mode & 0o111 else 0)
                iso.add_fp(source, node.size,  # type: ignore[arg-type]  # file-like: mode, read, seek, tell
                           f"{node.iso_path};1", rr_name=node.rr_name,
                           joliet_path=node.joliet_path, file_mode=mode)
        fd, tmp = tempfile.mkstemp(prefix=".vmgahp-cdrom-", suffix=".tmp", dir=job.working_dir)
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out, blocksize=COPY_BLOCK)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # the hypervisor (e.g. libvirt-qemu) must read it
            if os.geteuid() == 0 and job.owner_uid is not None:
                os.fchown(out.fileno(), job.owner_uid, job.owner_gid if job.owner_gid is not None else -1)
            size = os.fstat(out.fileno()).st_size
        os.replace(tmp, iso_path)
        tmp = ""
        fsync_dir(Path(job.working_dir))  # the rename survives a host crash
        return len(sources), size
    except _Unreadable as exc:
        raise GahpError(tokens.CANNOT_READ_CDROM_FILE, str(exc)) from exc
    except (PyCdlibException, OSError) as exc:
        raise GahpError(tokens.CANNOT_CREATE_ISO_FILE, f"cannot build {iso_path}: {exc}") from exc
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for source in sources:
            source.close()
        with contextlib.suppress(Exception):
            iso.close()
