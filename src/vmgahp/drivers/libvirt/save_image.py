"""Compressed memory states: libvirt's save image, compressed by zstd while
libvirt writes it, and fed back to libvirt through a FIFO at restore.

A checkpoint is shipped to the submit machine and on to the next execute
node, so its size is what a vacate costs the user. libvirt 9 cannot write
zstd itself (its ``save_image_format`` is host-wide and has no zstd), and its
save needs a seekable file: it writes a header marked partial, the domain XML
with 64 KiB of padding, QEMU's stream, and then rewrites the header as
complete (``qemu_saveimage.c``). So the save goes to a raw file as always, and
a thread feeds QEMU's stream to ``zstd`` as libvirt writes it: the compression
overlaps the save. When libvirt is done, the header and XML (now final) are
compressed into a frame of their own at the front of the file.

The file is a standard zstd stream of libvirt's save image, byte for byte:

    [zstd frame: header and XML][skippable frame: padding to SLOT]
    [zstd frame: QEMU's stream, written from SLOT on while libvirt saved]

so ``zstd -d xen.mem.ckpt -o image`` gives back what ``virsh restore`` reads,
and each frame carries zstd's content checksum: a damaged state is a readable
error, not a guest restored with bad memory. A state that does not start with
zstd's magic is an uncompressed libvirt image (older vmgahp, the C++ gahp, or
compression switched off) and restores as it is. An image libvirt wrote in
another format (an admin's ``save_image_format``) is left as libvirt wrote it.

Both zstd processes read from a pipe of this process and write only what
they must (a file, a FIFO's write end), so one whose gahp died sees end of
input or a broken pipe and exits instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from vmgahp import log
from vmgahp.drivers.base import HostError, JobImageError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE_MAGIC = 0x184D2A50
# libvirt's virQEMUSaveHeader: magic, then u32 version, data_len, was_running,
# format, cookieOffset and 14 unused; the XML, cookie and padding follow.
LIBVIRT_HEADER = struct.Struct("=16s5I56x")
LIBVIRT_PARTIAL, LIBVIRT_COMPLETE = b"LibvirtQemudPart", b"LibvirtQemudSave"
RAW_FORMAT = 0
SLOT = 64 << 10     # the header frame: ~2 KiB for a usual XML plus its 64 KiB of zeros
LEVEL = "-1"        # measured: -3 saves 4 % more bytes for twice the CPU (docs/performance.md)
WINDOW_LOG = 26     # a 64 MiB window finds the boot loader's second copy of the kernel
CHUNK = 1 << 20
POLL_SECONDS = 0.01
FINISH_SECONDS = 30.0  # a decompressor still running this long after a restore is stuck


class CompressionFailed(Exception):
    """The compressed copy could not be made; the raw image is still whole."""


def find_zstd() -> str | None:
    """The zstd program: on PATH, else Debian's place (a starter's PATH can be bare)."""
    return shutil.which("zstd") or (shutil.which("zstd", path="/usr/bin:/bin"))


def is_compressed(path: Path) -> bool:
    """False too for a file that cannot be read: libvirt then says why."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ZSTD_MAGIC
    except OSError:
        return False


# ------------------------------------------------------------------ save
def save(run_save: Callable[[str], None], target: Path, zstd: str) -> bool:
    """Run ``run_save(raw_path)`` (libvirt's save) and leave the state compressed
    in ``target``. True if it is compressed; False if compression failed after
    a good save, in which case ``target`` is the raw image (still a valid
    state). A failed save leaves neither file and raises what it raised."""
    raw = target.with_name(target.name + ".raw")
    for stale in (raw, target):
        stale.unlink(missing_ok=True)
    follower = _Follower(raw, target, zstd)
    try:
        run_save(str(raw))
    except BaseException:
        follower.abandon()
        raw.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise
    try:
        follower.finish()
        _write_header_frame(raw, follower.start, target, zstd)
    except (OSError, CompressionFailed) as exc:
        log.get().warning("checkpoint_uncompressed", path=str(target), detail=str(exc))
        target.unlink(missing_ok=True)
        os.replace(raw, target)
        return False
    raw.unlink()
    return True


class _Follower:
    """Feeds QEMU's part of the growing raw image to ``zstd``, which writes at SLOT."""

    def __init__(self, raw: Path, target: Path, zstd: str) -> None:
        self.raw = raw
        self.saved = threading.Event()
        self.abandoned = False
        self.error: BaseException | None = None
        self.refused = ""  # why this image is not one to compress
        self.start = 0     # where QEMU's stream begins: header and XML are before it
        # Guest memory: readable by no one else, as libvirt makes its own saves.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.seek(SLOT)
            # The child shares this file description, so it writes from SLOT on.
            self.proc = subprocess.Popen(
                [zstd, "-q", LEVEL, "-T0", f"--long={WINDOW_LOG}", "-c"],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._feed, name="save-compress", daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        try:
            while not self.raw.exists():
                if self.saved.wait(POLL_SECONDS):
                    break
            if not self.raw.exists():
                return
            with open(self.raw, "rb") as source:
                fd = source.fileno()
                pos = self.start = self._stream_start(fd)
                while self.start and not self.abandoned:
                    done = self.saved.is_set()  # read before the size: once set, the size is final
                    size = os.fstat(fd).st_size
                    while pos < size and not self.abandoned:
                        chunk = os.pread(fd, min(CHUNK, size - pos), pos)
                        if not chunk:
                            break
                        self.proc.stdin.write(chunk)
                        pos += len(chunk)
                    if done:
                        return
                    self.saved.wait(POLL_SECONDS)
        except BaseException as exc:  # reported by finish(); the save goes on regardless
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def _stream_start(self, fd: int) -> int:
        """The offset of QEMU's stream, once libvirt's header is written; 0
        (and ``refused`` says why) for an image this module does not compress."""
        while os.fstat(fd).st_size < LIBVIRT_HEADER.size:
            if self.saved.is_set() and os.fstat(fd).st_size < LIBVIRT_HEADER.size:
                self.refused = "the image has no libvirt QEMU header"
                return 0
            if self.abandoned:
                return 0
            self.saved.wait(POLL_SECONDS)
        magic, version, data_len, _running, image_format, _cookie = LIBVIRT_HEADER.unpack(
            os.pread(fd, LIBVIRT_HEADER.size, 0))
        if magic not in (LIBVIRT_PARTIAL, LIBVIRT_COMPLETE) or version != 2:
            self.refused = "the image is not libvirt's QEMU save format 2"
        elif image_format != RAW_FORMAT:
            self.refused = f"libvirt wrote the image in its format {image_format} (save_image_format)"
        else:
            return LIBVIRT_HEADER.size + data_len
        return 0

    def finish(self) -> None:
        self.saved.set()
        self.thread.join()
        err = _reap(self.proc)
        if self.refused:
            raise CompressionFailed(self.refused)
        if self.error is not None:
            raise CompressionFailed(f"feeding zstd: {self.error}")
        if self.proc.returncode != 0:
            raise CompressionFailed(f"zstd exited {self.proc.returncode}: {err}")

    def abandon(self) -> None:
        self.abandoned = True
        self.saved.set()
        self.proc.kill()
        self.thread.join()
        _reap(self.proc)


def _write_header_frame(raw: Path, length: int, target: Path, zstd: str) -> None:
    """The image's first ``length`` bytes (header and XML, final now) as the
    file's first frame, then a skippable frame up to SLOT."""
    with open(raw, "rb") as source:
        head = source.read(length)
    frame = _run_zstd([zstd, "-q", LEVEL, "-c"], head)
    pad = SLOT - len(frame) - 8
    if pad < 0:
        raise CompressionFailed(f"the image's header and XML compress to {len(frame)} bytes, "
                                f"more than the {SLOT} set aside")
    with open(target, "r+b") as out:
        # Bytes between the skip header and SLOT stay a hole: zstd skips them.
        out.write(frame + struct.pack("<II", SKIPPABLE_MAGIC, pad))
        out.flush()
        os.fsync(out.fileno())


def _run_zstd(argv: list[str], data: bytes) -> bytes:
    done = subprocess.run(argv, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise CompressionFailed(f"zstd exited {done.returncode}: {_text(done.stderr)}")
    return done.stdout


# --------------------------------------------------------------- restore
class Source:
    """What libvirt reads to restore a state: the file itself, or a FIFO that
    a decompressor fills; ``header`` is a file with the image's header and XML
    (for ``saveImageGetXMLDesc``)."""

    def __init__(self, path: str, header: str, proc: subprocess.Popen | None = None,
                 hold: int | None = None) -> None:
        self.path, self.header, self.proc = path, header, proc
        self.hold = hold  # our read end of the FIFO, held while libvirt reads
        self.feeder: threading.Thread | None = None
        self.feed_error: BaseException | None = None

    def release(self) -> None:
        """Libvirt is done: without our read end, whatever it left unread
        breaks the decompressor's pipe instead of blocking it."""
        if self.hold is not None:
            os.close(self.hold)
            self.hold = None

    def abort_when_failed(self, abort: Callable[[], None], poll: float = 0.2) -> Callable[[], None]:
        """While libvirt reads: once the decompressor has failed, call
        ``abort`` every ``poll`` s (the domain may appear only after the
        failure) until the returned function is called. QEMU waits for the
        rest of a stream that ends early, so libvirt's restore never returns
        on a truncated state unless its domain is destroyed."""
        done = threading.Event()
        if self.proc is None:
            return done.set

        def watch() -> None:
            assert self.proc is not None
            while not done.wait(poll):
                if self.proc.poll() not in (None, 0) or self.feed_error is not None:
                    abort()

        threading.Thread(target=watch, daemon=True, name="restore-watch").start()
        return done.set

    def damage(self, wait: float = FINISH_SECONDS) -> str:
        """Why the decompressed stream is not the state, "" if it is whole.
        Call after libvirt is done with ``path``."""
        self.release()
        if self.proc is None:
            return ""
        assert self.feeder is not None
        self.feeder.join(wait)
        try:
            self.proc.wait(timeout=0 if self.feeder.is_alive() else wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.feeder.join()
            _reap(self.proc)
            return "the restore did not read the whole state"
        err = _reap(self.proc)
        if self.proc.returncode != 0:
            return f"zstd: {err or f'exit {self.proc.returncode}'}"
        if self.feed_error is not None:
            return f"reading the state: {self.feed_error}"
        return ""


@contextlib.contextmanager
def opened(path: Path, zstd: str | None) -> Iterator[Source]:
    """The state at ``path`` as libvirt can read it, for the ``with`` block."""
    if not is_compressed(path):
        yield Source(str(path), str(path))
        return
    if zstd is None:
        raise HostError(f"{path.name} is zstd-compressed and this host has no zstd program")
    scratch = tempfile.mkdtemp(prefix="vmgahp-restore-")
    proc: subprocess.Popen | None = None
    source: Source | None = None
    try:
        header = os.path.join(scratch, "header")
        with open(path, "rb") as handle:
            first = handle.read(SLOT)
        try:
            prefix = _run_zstd([zstd, "-q", "-d", "-c"], first)
        except CompressionFailed as exc:
            raise JobImageError(f"checkpoint memory state {path.name} is damaged ({exc})") from exc
        with open(header, "wb") as out:
            out.write(prefix)
        fifo = os.path.join(scratch, "state")
        os.mkfifo(fifo, 0o600)
        # A read end of our own first (non-blocking, so its open returns at
        # once), so the write end opens whether or not libvirt ever opens the
        # FIFO; being no writer, it does not keep a reader from seeing EOF.
        hold = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer = os.open(fifo, os.O_WRONLY)
        try:
            proc = subprocess.Popen([zstd, "-q", "-d", "-c", f"--long={WINDOW_LOG}"],
                                    stdin=subprocess.PIPE, stdout=writer, stderr=subprocess.PIPE)
        except BaseException:
            os.close(hold)
            raise
        finally:
            os.close(writer)
        source = Source(fifo, header, proc, hold)
        source.feeder = threading.Thread(target=_feed_file, args=(path, source), daemon=True,
                                         name="restore-decompress")
        source.feeder.start()
        yield source
    finally:
        if source is not None:
            source.release()
        if proc is not None and proc.poll() is None:
            proc.kill()
            _reap(proc)
        shutil.rmtree(scratch, ignore_errors=True)


def _feed_file(path: Path, source: Source) -> None:
    assert source.proc is not None and source.proc.stdin is not None
    try:
        with open(path, "rb") as handle:
            shutil.copyfileobj(handle, source.proc.stdin, CHUNK)
    except BrokenPipeError:
        pass  # zstd stopped: its exit status says why
    except BaseException as exc:
        source.feed_error = exc
    finally:
        with contextlib.suppress(OSError):
            source.proc.stdin.close()


def _reap(proc: subprocess.Popen) -> str:
    """Wait for a zstd whose input is closed; its last line of complaint."""
    proc.wait()
    err = proc.stderr.read() if proc.stderr is not None else b""
    if proc.stderr is not None:
        proc.stderr.close()
    return _text(err)


def _text(err: bytes | None) -> str:
    """zstd's last line of complaint."""
    lines = (err or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""
