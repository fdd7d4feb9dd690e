"""The job's working directory: names in it, and writing files there safely.

One owner for what every layer does to the scratch directory: atomic
writes (write, fsync, rename, fsync the directory), handing files to the job
user when the gahp runs as root, hashing, and telling a file that moves with
the job (named by its base name) from one on a shared filesystem (by path).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_READ = 1 << 20


def local_name(path: str, working_dir: str) -> str:
    """A file in the working dir by its name (it moves with the job), others by path."""
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(working_dir):
        return os.path.basename(path)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: all or nothing on disk."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def give_to(path: Path | str, uid: int | None, gid: int | None) -> None:
    """The file belongs to the job user (only root can, and only root must)."""
    if uid is None or os.geteuid() != 0:
        return
    os.chown(path, uid, gid if gid is not None else uid, follow_symlinks=False)


def give_tree_to(path: Path | str, uid: int | None, gid: int | None) -> None:
    """:func:`give_to` for a directory and everything below it (symlinks themselves, not their targets)."""
    if uid is None or os.geteuid() != 0:
        return
    give_to(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            give_to(os.path.join(root, name), uid, gid)
