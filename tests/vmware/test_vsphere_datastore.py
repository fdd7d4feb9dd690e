"""Datastore files over /folder and the FileManager, checked on vcsim's own disk."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from vmgahp.drivers.vmware.datastore import DsFile, folder_url
from vmgahp.drivers.vmware.errors import AlreadyExists, NotFound

pytestmark = pytest.mark.vcsim


def test_folder_made_on_the_datastore_disk(job):
    assert job.dir.is_dir()
    with pytest.raises(AlreadyExists, match="FileAlreadyExists"):
        job.client.make_folder(job.where, job.folder)
    job.client.make_folder(job.where, f"{job.folder}/a/b")  # parents as needed
    assert (job.dir / "a" / "b").is_dir()


def test_upload_lands_byte_for_byte(job):
    data = os.urandom(3 * (1 << 20) + 12345)  # several blocks and a partial one
    job.put("disk.vmdk", data)
    assert (job.dir / "disk.vmdk").read_bytes() == data
    job.put("disk.vmdk", b"shorter")  # replaces
    assert (job.dir / "disk.vmdk").read_bytes() == b"shorter"


def test_upload_streams_instead_of_reading_the_file(job):
    big = job.local / "big.bin"
    with open(big, "wb") as out:
        for _ in range(32):
            out.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        job.client.upload(job.where, big, f"{job.folder}/big.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (job.dir / "big.bin").stat().st_size == 32 << 20
    assert peak < 8 << 20, f"upload peaked at {peak >> 20} MiB of Python memory for a 32 MiB file"


def test_download_is_atomic_and_exact(job):
    data = os.urandom(2 * (1 << 20) + 7)
    (job.dir / "state.vmss").write_bytes(data)  # as the host would have written it
    target = job.local / "state.vmss"
    target.write_bytes(b"old contents")
    assert job.client.download(job.where, f"{job.folder}/state.vmss", target) == len(data)
    assert target.read_bytes() == data
    assert sorted(p.name for p in job.local.iterdir()) == ["state.vmss"]  # no temporary left


def test_download_of_a_missing_file_leaves_nothing(job):
    target = job.local / "missing.vmem"
    with pytest.raises(NotFound, match="404"):
        job.client.download(job.where, f"{job.folder}/missing.vmem", target)
    assert list(job.local.iterdir()) == []


def test_list_folder(job):
    job.put("a.vmx", b"x" * 10)
    job.put("b.nvram", b"y" * 3)
    job.client.make_folder(job.where, f"{job.folder}/sub")
    listed = job.client.list_folder(job.where, job.folder)
    assert listed == [DsFile("a.vmx", 10), DsFile("b.nvram", 3), DsFile("sub", listed[2].size, folder=True)]
    assert job.client.list_folder(job.where, job.folder, pattern="*.vmx") == [DsFile("a.vmx", 10)]
    with pytest.raises(NotFound):
        job.client.list_folder(job.where, f"{job.folder}/nope")


def test_delete_folder_with_contents(job):
    job.put("a.vmx", b"x")
    job.client.delete(job.where, job.folder)
    assert not job.dir.exists()
    with pytest.raises(NotFound):
        job.client.delete(job.where, job.folder)


def test_folder_url_quotes_names(job):
    url = folder_url(job.where, "my job/disk #1.vmdk")
    assert url == "/folder/my%20job/disk%20%231.vmdk?dcPath=DC0&dsName=LocalDS_0"
    job.client.make_folder(job.where, f"{job.folder}/my job")
    job.put("my job/disk #1.vmdk", b"odd name")
    assert (job.dir / "my job" / "disk #1.vmdk").read_bytes() == b"odd name"
