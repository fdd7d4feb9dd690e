"""The job ad evaluated in a child process (vmgahp.job.ad_reader) reads as the
in-process evaluation does, falls back to it when the child fails, and keeps
classad2 out of the gahp that runs the VM."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from vmgahp.job import ad_reader
from vmgahp.job.jobad import JobAd

LINES = [
    'VM_WORKING_DIR = "/tmp/x"', "JobVMMemory = 256 * 2", "Base = 3", "RequestCpus = Base + 1",
    'U = strcat("a", "@", "b")', "Undef = NoSuchAttr", "L = {1, 2}", "F = 2.75", "B = true",
    'Q = "with \\"quotes\\" and \\\\ backslash"', "jobvmmemory = 1024", "not a line", "X = (", "= 3",
    "Big = 9223372036854775807", "Inf = real(\"INF\")", 'Odd = "\udcff"', "Cap = \"secret\"",
]
NAMES = ["VM_WORKING_DIR", "JobVMMemory", "RequestCpus", "U", "Undef", "L", "F", "B", "Q", "Big", "Inf",
         "Odd", "Missing", "cap"]


def _same(a: JobAd, b: JobAd) -> None:
    for name in NAMES:
        for getter in ("get_str", "get_bool"):
            assert getattr(a, getter)(name) == getattr(b, getter)(name), (getter, name)
        if name != "Inf":  # int(inf) raises in both: the driver's job-ad checks guard it
            assert a.get_int(name) == b.get_int(name), name
        assert (name in a) == (name in b)
    assert a.dropped == b.dropped
    assert a.print_sorted() == b.print_sorted()


def test_the_child_reads_the_ad_as_this_process_does() -> None:
    ad_reader.prepare()
    _same(JobAd.from_entries(*ad_reader.evaluate(LINES)), JobAd(LINES))


def test_without_a_prepared_child_one_is_started() -> None:
    _same(JobAd.from_entries(*ad_reader.evaluate(LINES)), JobAd(LINES))


def test_a_child_that_cannot_start_falls_back_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child():
        raise OSError("no more processes")

    monkeypatch.setattr(ad_reader, "_spawn", no_child)
    _same(JobAd.from_entries(*ad_reader.evaluate(LINES)), JobAd(LINES))


def test_set_str_prints_as_classad_prints_a_string() -> None:
    import classad2

    value = 'a "b" \\c'
    ad = JobAd(['N = "old"'])
    ad.set_str("N", value)
    reference = classad2.ClassAd()
    reference["N"] = value
    assert ad.print_sorted() == f"N = {reference.lookup('N')}\n"


def test_the_gahp_running_a_vm_carries_no_classad_library() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="vmgahp-test-"))  # the job user must reach it
    os.chmod(tmp_path, 0o755)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    if os.geteuid() == 0:
        os.chown(disk, 1000, 1000)
    gahp = GahpProcess(tmp_path)
    try:
        gahp.handshake()
        gahp.send_ad(job_ad(tmp_path))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        maps = Path(f"/proc/{gahp.proc.pid}/maps").read_text()
        assert "classad2_impl" not in maps and "libclassad" not in maps
        assert gahp.call("CONDOR_VM_STATUS", "1")[1].startswith("STATUS=Running")
        log = (tmp_path / "vmgahp.log").read_text()
        assert "ad_child_failed" not in log and "vm_started" in log
    finally:
        gahp.kill()
        shutil.rmtree(tmp_path, ignore_errors=True)
