"""The job's scratch directory, prepared and emptied as the starter's file transfer does.

* :func:`choose_job_user` decides whose files these are (the gahp runs the VM
  as that user and checks disk access as that user); the user is
  :class:`vmgahp.job.access.JobUser`, why it is that one is vmgahp run's own.
* :func:`make_scratch` and :func:`transfer_in` build a fresh ``dir_XXXX``
  (mode 0755, as the starter leaves it for KVM/Xen) holding the job's input
  files, owned by the job user when ``vmgahp run`` runs as root.
* :func:`snapshot` and :func:`changed_files` find the job's output the way
  FileTransfer does: files in the top of the scratch directory that are new or
  whose size or modification time changed since the transfer in.
  What becomes of them is :mod:`vmgahp.run.output`.
* :func:`copy_file` copies sparse files (disk images) without filling the
  holes, using ``SEEK_DATA``/``SEEK_HOLE`` and ``copy_file_range``.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vmgahp.job.access import JobUser
from vmgahp.run.submit import InputFile

FALLBACK_UID = 1000  # the first ordinary user on most Linux systems
CHUNK = 8 << 20

# Files vmgahp run itself keeps in the scratch directory, never output
# (the starter's own files, like _condor_stdout, are not output either).
GAHP_LOG = "_vmgahp_run.gahp.log"
GAHP_STDERR = "_vmgahp_run.gahp.stderr"
OWN_FILES = frozenset({GAHP_LOG, GAHP_STDERR})


@dataclass(frozen=True)
class ChosenUser:
    """The job user of a ``vmgahp run``, and how it was chosen (for the header)."""

    user: JobUser
    why: str


def _primary_gid(uid: int, default: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return default


def _positive(text: str | None) -> int | None:
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


def choose_job_user(submit_dir: Path, environ: dict[str, str] | None = None) -> ChosenUser:
    """Whose job this is.

    * Not root: the invoking user (the gahp, not being root, runs as the caller).
    * Root through sudo: ``SUDO_UID``/``SUDO_GID``, the user who typed the command.
    * Plain root: the owner of the submit directory if that is not root -
      on a pool the job would belong to whoever submitted it from there - else
      uid 1000. The gahp never runs a VM as root (it needs ``VMGAHP_USER_UID``
      > 0), and a root-owned job directory usually means a test set-up where
      the first ordinary user is the best stand-in.
    """
    env = os.environ if environ is None else environ
    if os.geteuid() != 0:
        return ChosenUser(JobUser(os.getuid(), os.getgid()), "the invoking user")
    sudo_uid = _positive(env.get("SUDO_UID"))
    if sudo_uid is not None:
        gid = _positive(env.get("SUDO_GID")) or _primary_gid(sudo_uid, sudo_uid)
        return ChosenUser(JobUser(sudo_uid, gid), "SUDO_UID")
    st = submit_dir.stat()
    if st.st_uid != 0:
        return ChosenUser(JobUser(st.st_uid, st.st_gid), f"owner of {submit_dir}")
    gid = _primary_gid(FALLBACK_UID, FALLBACK_UID)
    return ChosenUser(JobUser(FALLBACK_UID, gid), f"uid {FALLBACK_UID}: running as root, {submit_dir} is root's")


def job_user(submit_dir: Path, environ: dict[str, str] | None = None) -> JobUser:
    """The user :func:`choose_job_user` chooses."""
    return choose_job_user(submit_dir, environ).user


def make_scratch(root: Path | None) -> Path:
    """A fresh, empty execute directory, mode 0755."""
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="dir_vmgahp-run-", dir=root))
    os.chmod(path, 0o755)  # vm_proc.cpp chmods it 0755 for KVM/Xen: libvirt must reach the disks
    return path


def transfer_in(scratch: Path, inputs: Iterable[InputFile], extra: Iterable[Path] = ()) -> list[str]:
    """Copy the job's input files (then ``extra``, e.g. a checkpoint) into ``scratch``.

    Returns the names now in the scratch directory, in copy order.
    """
    names: list[str] = []
    for item in inputs:
        if item.source.is_dir():
            if item.name:
                shutil.copytree(item.source, scratch / item.name, symlinks=False, copy_function=_copy2,
                                dirs_exist_ok=True)
                names.append(item.name)
            else:  # "dir/" transfers the directory's contents
                for child in sorted(item.source.iterdir()):
                    names += transfer_in(scratch, [InputFile(child, child.name, item.command, item.line)])
        else:
            copy_file(item.source, scratch / item.name)
            names.append(item.name)
    for path in extra:
        copy_file(path, scratch / path.name)
        if path.name not in names:
            names.append(path.name)
    return names


FileState = tuple[int, int]  # (size, mtime_ns)


def snapshot(scratch: Path) -> dict[str, FileState]:
    """Size and modification time of every regular file at the top of ``scratch``."""
    state: dict[str, FileState] = {}
    try:
        entries = list(os.scandir(scratch))
    except FileNotFoundError:  # vm_no_output_vm may remove the whole directory
        return state
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            state[entry.name] = (st.st_size, st.st_mtime_ns)
    return state


def changed_files(scratch: Path, before: dict[str, FileState], keep: Iterable[str] = ()) -> list[str]:
    """New or modified files (plus those in ``keep`` that still exist), sorted."""
    now = snapshot(scratch)
    keep = set(keep)
    return sorted(
        name
        for name, state in now.items()
        if name not in OWN_FILES and not name.endswith(".partial") and (before.get(name) != state or name in keep)
    )


# ------------------------------------------------------------------ copying


def _copy2(src: str, dst: str) -> None:
    copy_file(Path(src), Path(dst))


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file, keeping holes (a 20 GB sparse image stays small) and mode/mtime."""
    with open(src, "rb") as fin:
        size = os.fstat(fin.fileno()).st_size
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        with open(dst, "wb") as fout:
            try:
                _copy_data_segments(fin.fileno(), fout.fileno(), size)
            except _NoSeekData:
                fin.seek(0)
                _copy_range(fin.fileno(), fout.fileno(), 0, size)
            fout.truncate(size)
    shutil.copystat(src, dst)


class _NoSeekData(Exception):
    pass


def _copy_data_segments(fin: int, fout: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fin, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if offset == 0 and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                raise _NoSeekData from exc
            raise
        hole = os.lseek(fin, data, os.SEEK_HOLE)
        _copy_range(fin, fout, data, hole - data)
        offset = hole


def _copy_range(fin: int, fout: int, offset: int, length: int) -> None:
    end = offset + length
    position = offset
    while position < end:
        count = min(CHUNK, end - position)
        try:
            done = os.copy_file_range(fin, fout, count, position, position)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            done = _pread_pwrite(fin, fout, position, count)
        if done == 0:  # the file shrank under us
            return
        position += done


def _pread_pwrite(fin: int, fout: int, position: int, count: int) -> int:
    data = os.pread(fin, count, position)
    if data:
        os.pwrite(fout, data, position)
    return len(data)


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent size, bytes allocated on disk)."""
    st = path.stat()
    return st.st_size, st.st_blocks * 512
