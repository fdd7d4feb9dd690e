"""``VM_GAHP_LOG`` as a file that many gahp processes append to and rotate.

HTCondor's rules (``src/condor_utils/dprintf.cpp``, ``dprintf_config.cpp``,
``log_rotate.cpp``), kept here:

* the log is rotated when it has reached ``MAX_VM_GAHP_LOG`` bytes (checked
  before a line is written; ``0`` never rotates; the knobs are read by
  :mod:`vmgahp.log_knobs`);
* ``MAX_NUM_VM_GAHP_LOG`` old files are kept (default 1). With one, the old
  file is ``VMGahpLog.old``; with more, each rotation renames the log to
  ``VMGahpLog.<YYYYmmddTHHMMSS>`` (local time) and, past the limit, the
  oldest of those is renamed onto ``VMGahpLog.old``;
* each line goes out in one ``write`` on an ``O_APPEND`` descriptor, so lines
  of concurrent writers never interleave.

What HTCondor leaves to chance is locked here. (Without ``<SUBSYS>_LOCK``
each of its writers that finds its file full renames the path: the other
writers, still holding the file just rotated - full - each rename the new,
nearly empty one onto ``.old`` in turn, and the lines of the first are lost.
With the lock it re-opens and re-checks under it, but appends unlocked.)
Here each line is written holding a shared ``flock`` on the file itself, and
a rotation happens holding the exclusive one, so no file is rotated between
a writer's size check and its write. A writer whose file has reached the
limit - which is also what a file another process rotated away looks like,
since only a full file is rotated - takes the exclusive lock and then either
follows that rotation (the path names another file: it re-opens) or rotates
itself. So no line is written into a rotated-away file, none is lost, none
is duplicated, and no lock file is needed. A move by anything else (an
admin, logrotate) is noticed within a second: the path is looked at once a
second, not once a line. Two rotations in one second get distinct, ordered
names (HTCondor's would overwrite each other).
"""

from __future__ import annotations

import _thread
import fcntl
import os
import stat
import time
import weakref
from typing import Callable

from vmgahp.log_knobs import LogOptions

CHECK_INTERVAL = 1.0  # seconds between checks that the path still names our file
RETRY_INTERVAL = 60.0  # after a rotation failed (say, EACCES on the directory)
_STAMP = "%Y%m%dT%H%M%S"
_NEVER = 1 << 62


def _is_stamp(suffix: str) -> bool:
    """log_rotate.cpp isTimestampString: 8 digits, ``T``, 6 digits."""
    return len(suffix) == 15 and suffix[8] == "T" and (suffix[:8] + suffix[9:]).isdigit() and suffix.isascii()


class LogFile:
    """One log path, appended to by this process (any thread) and rotated.

    ``write`` raises OSError only when the file cannot be opened at all;
    trouble with rotation or locking is reported through ``notes`` (texts
    the caller logs) and the lines still go to the file."""

    def __init__(self, path: str, options: LogOptions,
                 announce: Callable[[str, int], bytes] | None = None) -> None:
        self.path = path
        self.max_size = max(0, options.max_size)
        self.max_num = options.max_num
        self.announce = announce  # the first line of a new file: (old file's name, its size) -> bytes
        self.notes: list[str] = []
        self._mutex = _thread.allocate_lock()
        self._fd = -1
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we write
        self._locking = True  # False once flock has failed here (say, NFS without locks)
        self._next_check = 0.0  # monotonic time of the next check that the path still names our file
        self._limit = self.max_size or _NEVER  # the size that makes a rotation due
        self._regular = True
        self._retry_at = 0.0  # a rotation failed: not again before this (the limit is _NEVER till then)
        _open_files.add(self)

    # ------------------------------------------------------------ the line
    def ensure_open(self) -> None:
        """Open the file now (OSError if it cannot be), not at the first line."""
        with self._mutex:
            if self._fd < 0:
                self._fd, self._id = self._open()

    def write(self, data: bytes) -> None:
        with self._mutex:
            fd = self._fd
            if fd >= 0 and self._locking:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except OSError:
                    pass  # the slow way says why
                else:
                    try:  # the way of nearly every line: two lock calls, a seek, the write
                        if time.monotonic() < self._next_check and (
                                self._limit == _NEVER or os.lseek(fd, 0, os.SEEK_END) < self._limit):
                            written = os.write(fd, data)  # the path is ours, not full: nobody rotates it now
                            if written < len(data):
                                self._append(fd, data[written:])
                            return
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
            self._write_slowly(data)

    def _write_slowly(self, data: bytes) -> None:
        """The line that finds the file full, or a second gone since the path
        was last looked at, or nothing opened yet."""
        if self._fd < 0:
            self._fd, self._id = self._open()
        for _ in range(4):  # once, unless other processes rotate under our feet
            fd = self._fd
            locked = self._flock(fd, fcntl.LOCK_SH)
            stale = -1
            try:
                now = time.monotonic()
                if now < self._next_check and not self._full(fd):
                    self._append(fd, data)
                    return
                if locked:  # unlock first, never convert: two converting writers would deadlock
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    locked = self._flock(fd, fcntl.LOCK_EX)
                stale = self._settle(fd, now)
                if stale < 0:
                    self._append(fd, data)
                    return
            finally:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if stale >= 0:
                    os.close(stale)
        self._append(self._fd, data)

    def _full(self, fd: int) -> bool:
        return self._limit != _NEVER and os.lseek(fd, 0, os.SEEK_END) >= self._limit

    def _append(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    # ------------------------------------------------------- the file itself
    def _open(self) -> tuple[int, tuple[int, int]]:
        flags = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:  # readable too: NFS emulates flock with POSIX locks, and a shared one needs it
            fd = os.open(self.path, os.O_RDWR | flags, 0o644)
        except PermissionError:
            fd = os.open(self.path, os.O_WRONLY | flags, 0o644)
        st = os.fstat(fd)
        self._regular = stat.S_ISREG(st.st_mode)  # /dev/null or a pipe is never full, never rotated
        if not self._regular:
            self._limit = _NEVER
        return fd, (st.st_dev, st.st_ino)

    def _settle(self, fd: int, now: float) -> int:
        """Holding ``fd``'s exclusive lock: if the path names another file
        (another process rotated ours) or ours is full (we rotate it), switch
        to the path's file and return the descriptor to close once unlocked;
        -1 when the line goes to ``fd`` after all."""
        self._next_check = now + CHECK_INTERVAL
        if self.max_size and now >= self._retry_at and self._regular:
            self._limit = self.max_size
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._id
        except OSError:
            moved = True
        announce = b""
        if not moved:
            if not self._full(fd):
                return -1
            size = os.fstat(fd).st_size
            suffix = self._rotate()
            if suffix is None:
                return -1
            if self.announce is not None:
                announce = self.announce(f"{os.path.basename(self.path)}.{suffix}", size)
        try:
            self._fd, self._id = self._open()
        except OSError as exc:
            self._note(f"cannot reopen VM_GAHP_LOG {self.path!r}: {exc}; still writing the old file")
            self._next_check = now + RETRY_INTERVAL
            return -1
        if announce:  # at once: this is the file that follows the one just rotated
            self._append(self._fd, announce)
        return fd

    def _rotate(self) -> str | None:
        """Rename the full log to its old name and make room; the suffix
        used, or None if that failed."""
        directory, base = os.path.split(self.path)
        try:
            suffixes = self._rotated(directory or ".", base)
            suffix = "old" if self.max_num <= 1 else self._new_stamp(suffixes)
            os.rename(self.path, f"{self.path}.{suffix}")
        except OSError as exc:
            self._retry_at = time.monotonic() + RETRY_INTERVAL
            self._limit = _NEVER
            self._note(f"cannot rotate VM_GAHP_LOG {self.path!r}: {exc}; trying again in {RETRY_INTERVAL:g} s")
            return None
        suffixes.add(suffix)
        self._clean_up(suffixes)
        return suffix

    def _rotated(self, directory: str, base: str) -> set[str]:
        """The suffixes of the old files there (``old`` and time stamps)."""
        prefix = base + "."
        found = set()
        for name in os.listdir(directory):
            if name.startswith(prefix):
                suffix = name[len(prefix):]
                if suffix == "old" or _is_stamp(suffix):
                    found.add(suffix)
        return found

    def _new_stamp(self, suffixes: set[str]) -> str:
        """Now, as a time stamp later than any existing one: names stay
        distinct and in age order even for several rotations in a second
        or a clock set back."""
        newest = max((s for s in suffixes if s != "old"), default="")
        moment = int(time.time())
        stamp = time.strftime(_STAMP, time.localtime(moment))
        for _ in range(100000):
            if stamp > newest:
                break
            moment += 1
            stamp = time.strftime(_STAMP, time.localtime(moment))
        return stamp

    def _clean_up(self, suffixes: set[str]) -> None:
        """log_rotate.cpp cleanUpOldLogFiles: while more than ``max_num`` old
        files exist, the oldest time-stamped one is renamed onto ``.old``
        (which so always holds the oldest lines kept)."""
        if self.max_num <= 0:
            return
        while len(suffixes) > self.max_num:
            oldest = min(suffixes)  # time stamps sort before "old"
            if oldest == "old":
                break
            try:
                os.replace(f"{self.path}.{oldest}", f"{self.path}.old")
            except FileNotFoundError:
                pass  # another rotator's clean-up got there first
            except OSError as exc:
                self._note(f"cannot remove the old log {self.path}.{oldest}: {exc}")
                break
            suffixes.discard(oldest)
            suffixes.add("old")

    # -------------------------------------------------------------- locking
    def _flock(self, fd: int, how: int) -> bool:
        if not self._locking:
            return False
        try:
            fcntl.flock(fd, how)
            return True
        except OSError as exc:
            self._locking = False
            self._note(f"cannot lock VM_GAHP_LOG {self.path!r} ({exc}); it is rotated without locking, and "
                       "a line may land in a file another gahp has just rotated")
            return False

    def _note(self, text: str) -> None:
        if len(self.notes) < 100:
            self.notes.append(text)

    def take_notes(self) -> list[str]:
        """The notes so far, once each (any thread may ask)."""
        if not self.notes:
            return []
        with self._mutex:
            notes, self.notes = self.notes, []
        return notes

    def close(self) -> None:
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1

    def _forget_after_fork(self) -> None:
        """In a forked child: a descriptor shared with the parent shares its
        flock too, so the child opens its own (and its own thread lock: the
        parent's may have been held by another thread at the fork)."""
        self._mutex = _thread.allocate_lock()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = -1


_open_files: weakref.WeakSet[LogFile] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log_file in list(_open_files):
        log_file._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
