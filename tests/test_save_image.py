"""drivers/libvirt/save_image without libvirt: a writer that behaves as
libvirt's qemuSaveImageCreate does (partial header, XML and cookie with 64 KiB
of zeros, QEMU's stream in pieces over time, then the header rewritten as
complete) stands in for the save; the real zstd program does the rest.
A real libvirtd and guest are in test_libvirt_real.py."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vmgahp.drivers.base import HostError
from vmgahp.drivers.libvirt import save_image
from vmgahp.drivers.libvirt.save_image import LIBVIRT_HEADER

ZSTD = save_image.find_zstd()
pytestmark = pytest.mark.skipif(ZSTD is None, reason="needs the zstd program (scripts/setup.sh installs it)")


def libvirt_like_image(stream: bytes, xml: bytes = b"<domain><name>t</name></domain>", image_format: int = 0,
                       complete: bool = True) -> bytes:
    magic = save_image.LIBVIRT_COMPLETE if complete else save_image.LIBVIRT_PARTIAL
    data_len = len(xml) + 1 + (64 << 10)
    return LIBVIRT_HEADER.pack(magic, 2, data_len, 1, image_format, 0) + xml + b"\0" * (data_len - len(xml)) + stream


def guest_like_stream(size: int, seed: int = 7) -> bytes:
    """Pages as a guest's memory has them: zeros, text-like runs, and random
    (already compressed) data that no compressor shrinks."""
    rng = random.Random(seed)
    pages = []
    for _ in range(size // 4096):
        kind = rng.random()
        if kind < 0.3:
            pages.append(bytes(4096))
        elif kind < 0.8:
            pages.append((b"kernel text %d " % rng.randrange(50)) * 256)
        else:
            pages.append(rng.randbytes(4096))
    return b"".join(page[:4096] for page in pages)


class LibvirtLikeSave:
    """run_save for save_image.save: writes ``image`` as libvirt does, in
    pieces with pauses, so the follower reads a growing file."""

    def __init__(self, image: bytes, pieces: int = 20, pause: float = 0.005, fail_after: int | None = None,
                 rewrite_header: bool = True) -> None:
        self.image, self.pieces, self.pause = image, pieces, pause
        self.fail_after, self.rewrite_header = fail_after, rewrite_header

    def __call__(self, path: str) -> None:
        partial = save_image.LIBVIRT_PARTIAL + self.image[16:] if self.rewrite_header else self.image
        step = max(1, len(partial) // self.pieces)
        with open(path, "wb") as out:
            for index, offset in enumerate(range(0, len(partial), step)):
                if self.fail_after is not None and index == self.fail_after:
                    raise RuntimeError("libvirt: the save failed midway")
                out.write(partial[offset:offset + step])
                out.flush()
                time.sleep(self.pause)
        if self.rewrite_header:
            with open(path, "r+b") as out:
                out.write(self.image[:LIBVIRT_HEADER.size])


def decompressed(path: Path) -> bytes:
    return subprocess.run([ZSTD, "-q", "-d", "-c", str(path)], capture_output=True, check=True).stdout


def read_all(source: save_image.Source) -> bytes:
    with open(source.path, "rb") as fifo:
        return fifo.read()


@pytest.fixture
def image() -> bytes:
    return libvirt_like_image(guest_like_stream(4 << 20))


def test_the_state_is_a_zstd_file_of_libvirts_final_image(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "xen.mem.ckpt.partial"
    assert save_image.save(LibvirtLikeSave(image), target, ZSTD) is True
    assert save_image.is_compressed(target)
    assert decompressed(target) == image  # the rewritten header included
    assert not (tmp_path / "xen.mem.ckpt.partial.raw").exists()
    assert target.stat().st_size < len(image) / 2


def test_the_compressed_state_is_private_whatever_the_umask(tmp_path: Path, image: bytes) -> None:
    """Guest memory: 0600, as libvirt makes its own save files."""
    target = tmp_path / "xen.mem.ckpt"
    previous = os.umask(0o022)
    try:
        assert save_image.save(LibvirtLikeSave(image), target, ZSTD) is True
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o600


def test_layout_header_frame_then_skippable_padding_then_the_stream(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    with open(target, "rb") as handle:
        slot = handle.read(save_image.SLOT)
        rest = handle.read()
    head = subprocess.run([ZSTD, "-q", "-d", "-c"], input=slot, capture_output=True, check=True).stdout
    assert head == image[:len(head)] and len(head) == LIBVIRT_HEADER.size + LIBVIRT_HEADER.unpack(image[:92])[2]
    assert rest[:4] == save_image.ZSTD_MAGIC
    assert subprocess.run([ZSTD, "-q", "-d", "-c"], input=rest, capture_output=True, check=True).stdout \
        == image[len(head):]


def test_a_failed_save_leaves_no_file_and_raises_what_libvirt_raised(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    with pytest.raises(RuntimeError, match="midway"):
        save_image.save(LibvirtLikeSave(image, fail_after=5), target, ZSTD)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_save_that_fails_before_writing_anything(tmp_path: Path) -> None:
    def refuse(path: str) -> None:
        raise RuntimeError("libvirt: domain is not running")

    with pytest.raises(RuntimeError, match="not running"):
        save_image.save(refuse, tmp_path / "state", ZSTD)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("image_kind", ["other driver", "libvirt compressed", "tiny"])
def test_an_image_not_to_compress_is_kept_as_libvirt_wrote_it(tmp_path: Path, image_kind: str) -> None:
    image = {
        "other driver": b"TestGuestMagic" + b"<domain/>" * 5000,  # libvirt's test driver
        "libvirt compressed": libvirt_like_image(os.urandom(100_000), image_format=3),  # save_image_format xz
        "tiny": b"x" * 50,
    }[image_kind]
    target = tmp_path / "state"
    compressed = save_image.save(LibvirtLikeSave(image, rewrite_header=image_kind == "libvirt compressed"),
                                 target, ZSTD)
    assert compressed is False
    assert target.read_bytes() == image
    assert os.listdir(tmp_path) == ["state"]


def test_when_zstd_fails_the_raw_image_is_the_state(tmp_path: Path, image: bytes) -> None:
    broken = tmp_path / "zstd"
    broken.write_text("#!/bin/sh\ncat >/dev/null; echo 'zstd: error 70 : Write error : No space left' >&2; exit 70\n")
    broken.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    target = work / "state"
    assert save_image.save(LibvirtLikeSave(image), target, str(broken)) is False
    assert target.read_bytes() == image
    assert os.listdir(work) == ["state"]


def test_restore_reads_the_image_back_through_a_fifo(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    with save_image.opened(target, ZSTD) as source:
        assert Path(source.path).is_fifo()
        header = Path(source.header).read_bytes()
        assert header == image[:len(header)] and len(header) > 64 << 10
        assert read_all(source) == image
        assert source.damage() == ""
        scratch = Path(source.path).parent
    assert not scratch.exists()


def test_an_uncompressed_state_is_read_where_it_is(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    target.write_bytes(image)
    with save_image.opened(target, None) as source:
        assert source.path == source.header == str(target)
        assert source.damage() == ""


def test_a_compressed_state_without_zstd_is_the_hosts_problem(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    with pytest.raises(HostError, match="no zstd"):
        with save_image.opened(target, None):
            pass


def _damaged(tmp_path: Path, image: bytes, how: str) -> Path:
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    data = bytearray(target.read_bytes())
    if how == "flipped":
        data[len(data) * 2 // 3] ^= 0x40
    elif how == "truncated":
        del data[len(data) * 2 // 3:]
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_a_damaged_stream_is_reported_not_taken(tmp_path: Path, image: bytes, how: str) -> None:
    target = _damaged(tmp_path, image, how)
    with save_image.opened(target, ZSTD) as source:
        got = read_all(source)
        problem = source.damage()
    assert got != image
    assert problem.startswith("zstd: ")


def test_a_damaged_header_frame_is_the_jobs_image(tmp_path: Path, image: bytes) -> None:
    from vmgahp.drivers.base import JobImageError

    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(JobImageError, match="damaged"):
        with save_image.opened(target, ZSTD):
            pass


def test_a_reader_that_stops_early_is_not_a_whole_restore(tmp_path: Path, image: bytes) -> None:
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    with save_image.opened(target, ZSTD) as source:
        with open(source.path, "rb") as fifo:
            fifo.read(1 << 20)
        # The reader closed with most of the state unread: the decompressor's
        # pipe breaks once our own read end is released.
        assert source.damage(wait=10) != ""


def test_nobody_ever_opens_the_fifo(tmp_path: Path, image: bytes) -> None:
    """libvirt refused before opening: no thread or process is left waiting."""
    target = tmp_path / "state"
    save_image.save(LibvirtLikeSave(image), target, ZSTD)
    before = threading.active_count()
    with save_image.opened(target, ZSTD) as source:
        proc = source.proc
    assert proc is not None and proc.poll() is not None
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
