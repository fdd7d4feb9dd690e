"""``vmgahp run`` tells the truth about the pool.

* For every VM-universe command HTCondor 25's condor_submit knows, the ad
  ``submit.build`` makes equals the one condor_submit makes
  (``fixtures/condor_submit_vm.py``, read from submit_utils.cpp).
* Every command only vmgahp knows still works, and prints a loud hint whose
  ``+`` lines (and transfer_input_files line) are exactly the difference from
  condor_submit's ad; pasted into the file instead of the commands, they give
  the same ad (the round trip), with no hint left.
* The examples use only what condor_submit knows: no hint, no warning, and the
  ad condor_submit makes.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import classad2
import pytest

from fixtures.condor_submit_vm import CASES, EXAMPLES, LEGACY_CASES, READ_EXACTLY, SCOPE
from vmgahp.job.jobad import JobAd
from vmgahp.run import cli
from vmgahp.run.submit import LEGACY, Identity, Job, SubmitError, build, load

TOP = Path(__file__).resolve().parents[1]
ALICE = Identity("alice", "example.org")
LEGACY_COMMANDS = {entry.command for entry in LEGACY}


def write(tmp_path: Path, lines: dict[str, str], files: tuple[str, ...] = ()) -> Path:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "job.sub"
    path.write_text("".join(f"{key} = {value}\n" for key, value in lines.items()) + "queue\n")
    return path


def make(path: Path) -> Job:
    return build(load(path), ALICE)


def value(text: str) -> tuple[str, object]:
    """A ClassAd value to compare: a literal's type and value, else the expression."""
    tree = classad2.ExprTree(text)
    result = tree.eval()
    if isinstance(result, classad2.Value):  # an expression (MY.JobVMMemory): compare its form
        return ("expression", str(tree))
    return (type(result).__name__, result)


def assert_ad(ad: dict[str, str], expect: dict[str, str], names: tuple[str, ...] | set[str]) -> None:
    for name in names:
        if name not in expect:
            assert name not in ad, f"{name} = {ad.get(name)} is not in condor_submit's ad"
            continue
        assert name in ad, f"{name} is missing (condor_submit: {expect[name]})"
        assert value(ad[name]) == value(expect[name]), f"{name}: {ad[name]} != condor_submit's {expect[name]}"
        if name in READ_EXACTLY:
            assert ad[name] == expect[name], name


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_condor_submit_parity(tmp_path: Path, case: dict) -> None:
    path = write(tmp_path, case["lines"], case["files"])
    if case["error"] is not None:
        with pytest.raises(SubmitError, match=case["error"]):
            make(path)
        return
    job = make(path)
    assert_ad(job.ad, case["expect"], SCOPE)
    if case["name"] != "a relative vm_disk is not transferred":
        assert job.hints == []
    JobAd(job.ad_lines())  # the gahp reads every line


def hinted(job: Job) -> tuple[dict[str, str], list[str] | None]:
    """The + attributes and the transfer list the hints print."""
    attrs, transfer = {}, None
    for hint in job.hints:
        assert str(hint).startswith(f"WARNING: {hint.path}:{hint.line}: condor_submit (HTCondor 25) ")
        for line in hint.lines:
            name, _, text = line.partition(" = ")
            if name.startswith("+"):
                attrs[name[1:]] = text
            else:
                assert name == "transfer_input_files"
                transfer = [item.strip() for item in text.split(",")]
    return attrs, transfer


@pytest.mark.parametrize("case", LEGACY_CASES, ids=[c["name"] for c in LEGACY_CASES])
def test_legacy_commands_differ_by_their_hint(tmp_path: Path, case: dict) -> None:
    job = make(write(tmp_path, case["lines"], case["files"]))
    assert {hint.command for hint in job.hints} == {key for key in case["lines"] if key in LEGACY_COMMANDS}
    attrs, transfer = hinted(job)
    expect = dict(case["expect"])
    if transfer is not None:
        expect["TransferInput"] = '"' + ",".join(transfer) + '"'
    assert_ad(job.ad, {**expect, **attrs}, set(SCOPE) | set(attrs))


def round_trip(path: Path, job: Job) -> Path:
    """The submit file with the hinted commands replaced by the hints' lines."""
    drop = {hint.line for hint in job.hints}
    pasted: list[str] = []
    for hint in job.hints:
        pasted += [line for line in hint.lines if line not in pasted]
    if any(line.startswith("transfer_input_files") for line in pasted):
        drop |= {n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("transfer_input")}
    kept = [text for n, text in enumerate(path.read_text().splitlines(), 1) if n not in drop and text != "queue"]
    other = path.with_name("pool.sub")
    other.write_text("\n".join(kept + pasted + ["queue"]) + "\n")
    return other


@pytest.mark.parametrize("case", LEGACY_CASES, ids=[c["name"] for c in LEGACY_CASES])
def test_round_trip(tmp_path: Path, case: dict) -> None:
    path = write(tmp_path, case["lines"], case["files"])
    job = make(path)
    pool = make(round_trip(path, job))
    assert pool.hints == [] and pool.warnings == []
    strip = lambda ad: {k: v for k, v in ad.items() if k != "QDate"}  # noqa: E731 - a one-line helper
    assert strip(pool.ad) == strip(job.ad)
    files = lambda j: [(item.source, item.name) for item in j.inputs]  # noqa: E731 - a one-line helper
    assert (pool.checkpoint, pool.snapshot_disk, files(pool)) == (job.checkpoint, job.snapshot_disk, files(job))


def test_every_legacy_command_at_once_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "job.sub"
    (tmp_path / "job.sh").write_text("echo hi\n")
    (tmp_path / "boot.img").write_bytes(b"x")
    path.write_text(textwrap.dedent("""\
        universe         = vm
        vm_type          = kvm
        executable       = all
        vm_memory        = 128
        vm_disk          = boot.img:vda:w:raw
        transfer_input_files = boot.img
        vm_cdrom_files   = job.sh
        vm_should_transfer_cdrom_files = true
        kvm_cdrom_device = hdc
        vm_snapshot_disk = true
        vm_checkpoint    = true
        vm_hardware_vt   = false
        queue
        """))
    job = make(path)
    assert [str(hint) for hint in job.hints] == [
        f"WARNING: {path}:7: condor_submit (HTCondor 25) ignores 'vm_cdrom_files'; on a pool write instead:\n"
        '    +VMPARAM_CDROM_Files = "job.sh"\n'
        "    transfer_input_files = boot.img, job.sh",
        f"WARNING: {path}:8: condor_submit (HTCondor 25) ignores 'vm_should_transfer_cdrom_files'; "
        "on a pool write instead:\n"
        '    +VMPARAM_CDROM_Files = "job.sh"\n'
        "    transfer_input_files = boot.img, job.sh",
        f"WARNING: {path}:9: condor_submit (HTCondor 25) ignores 'kvm_cdrom_device'; on a pool write instead:\n"
        '    +VMPARAM_Kvm_CDROM_Device = "hdc"',
        f"WARNING: {path}:10: condor_submit (HTCondor 25) ignores 'vm_snapshot_disk'; on a pool write instead:\n"
        "    +VMPARAM_vm_Snapshot_Disk = true",
        f"WARNING: {path}:12: condor_submit (HTCondor 25) ignores 'vm_hardware_vt'; on a pool write instead:\n"
        "    +JobVMHardwareVT = false",
    ]
    assert job.checkpoint and job.snapshot_disk
    pool = make(round_trip(path, job))
    assert pool.hints == [] and pool.warnings == []
    assert {k: v for k, v in pool.ad.items() if k != "QDate"} == {k: v for k, v in job.ad.items() if k != "QDate"}


def test_shared_cdrom_files_are_full_paths(tmp_path: Path) -> None:
    job = make(write(tmp_path, {**CASES[0]["lines"], "vm_cdrom_files": "job.sh, /data/x.txt",
                                "vm_should_transfer_cdrom_files": "false"}))
    assert job.ad["VMPARAM_CDROM_Files"] == f'"{tmp_path}/job.sh,/data/x.txt"'  # read on the execute side
    assert job.inputs == [] and "TransferInput" not in job.ad
    job = make(write(tmp_path, {**CASES[0]["lines"], "vm_cdrom_files": f"{tmp_path}/a.txt",
                                "vm_should_transfer_cdrom_files": "true"}, files=("a.txt",)))
    assert job.ad["VMPARAM_CDROM_Files"] == '"a.txt"' and job.ad["TransferInput"] == f'"{tmp_path}/a.txt"'


def test_plus_attributes_work_as_on_a_pool(tmp_path: Path) -> None:
    job = make(write(tmp_path, {**CASES[0]["lines"], "vm_checkpoint": "true", "+VMPARAM_vm_Snapshot_Disk": "True",
                                "+VMPARAM_No_Output_VM": "1 == 1"}))
    assert job.snapshot_disk and job.no_output_vm and job.checkpoint  # what the gahp and the starter read
    assert job.ad["VMPARAM_vm_Snapshot_Disk"] == "True" and job.hints == []
    job = make(write(tmp_path, {**CASES[0]["lines"], "vm_snapshot_disk": "true",
                                "+VMPARAM_vm_Snapshot_Disk": "false"}))
    assert job.ad["VMPARAM_vm_Snapshot_Disk"] == "false" and not job.snapshot_disk  # the + line wins
    assert any("vm_snapshot_disk is ignored: +VMPARAM_vm_Snapshot_Disk is set" in w for w in job.warnings)
    job = make(write(tmp_path, {**CASES[0]["lines"], "+Empty": ""}))
    assert job.ad["Empty"] == "undefined"  # SetForcedAttributes (2704-2708)


def test_vmware_is_run_with_its_commands(tmp_path: Path) -> None:
    """condor_submit 25 refuses vmware (7027-7030); vmgahp run runs it, says so, and gives the pool forms."""
    vm = tmp_path / "vm"
    vm.mkdir()
    for name in ("guest.vmx", "guest.vmdk", "guest-flat.vmdk"):
        (vm / name).write_bytes(b"x")
    job = make(write(tmp_path, {**CASES[0]["lines"], "vm_type": "vmware", "vm_disk": None, "vmware_dir": "vm",
                                "vmware_should_transfer_files": "true"}))
    assert job.vm_type == "vmware" and job.snapshot_disk  # VMPARAM_VMware_SnapshotDisk: the gahp's default true
    assert job.ad["VMPARAM_VMware_VMX_File"] == '"guest.vmx"' and "VMPARAM_vm_Disk" not in job.ad
    assert any("refuses vm_type = vmware" in w for w in job.warnings)
    assert [h.command for h in job.hints] == ["vmware_dir", "vmware_should_transfer_files"]
    assert sorted(i.name for i in job.inputs) == ["guest-flat.vmdk", "guest.vmdk", "guest.vmx"]
    with pytest.raises(SubmitError, match="vmware_dir cannot be found"):
        make(write(tmp_path, {**CASES[0]["lines"], "vm_type": "vmware", "vm_disk": None,
                              "vmware_should_transfer_files": "true"}))
    job = make(write(tmp_path, {**CASES[0]["lines"], "vmware_dir": "vm"}))
    assert any("vmware_dir is ignored for vm_type = kvm" in w for w in job.warnings) and job.hints == []


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_examples_are_what_condor_submit_makes(tmp_path: Path, example: str) -> None:
    """Each example runs unchanged under vmgahp run and on a pool: no hint, no warning."""
    directory = tmp_path / "examples" / Path(example).parent
    shutil.copytree(TOP / "examples" / Path(example).parent, directory)
    cache = tmp_path / ".cache" / "tiny-guest"
    cache.mkdir(parents=True)
    for name in ("boot.img", "boot.qcow2"):
        (cache / name).write_bytes(b"x")
    job = make(directory / Path(example).name)
    assert job.hints == [] and job.warnings == []
    assert_ad(job.ad, EXAMPLES[example], set(SCOPE) | set(EXAMPLES[example]))
    names = sorted(item.name for item in job.inputs)
    assert names == sorted(item.split("/")[-1] for item in EXAMPLES[example]["TransferInput"].strip('"').split(","))


def test_run_prints_the_hints_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, {**CASES[0]["lines"], "vm_snapshot_disk": "true"})
    monkeypatch.setattr(cli, "_run", lambda plan, options: 0)
    assert cli.run_main([str(path)]) == 0
    err = capsys.readouterr().err
    assert (f"WARNING: {path}:6: condor_submit (HTCondor 25) ignores 'vm_snapshot_disk'; on a pool write instead:\n"
            "    +VMPARAM_vm_Snapshot_Disk = true\n") in err


def test_the_documented_jobs_run_unchanged_on_a_pool(tmp_path: Path) -> None:
    """docs/image-authors.md's job.sub files: no hint, no warning, every file transferred."""
    import re

    text = (TOP / "docs" / "image-authors.md").read_text()
    blocks = re.findall(r"cat > job.sub <<'EOF'\n(.*?)\nEOF", text, re.DOTALL)
    assert len(blocks) >= 2
    for number, block in enumerate(blocks):
        directory = tmp_path / str(number)
        directory.mkdir()
        listed = re.search(r"^transfer_input_files\s*=\s*(.*)$", block, re.MULTILINE)
        assert listed, block
        for name in listed.group(1).split(","):
            (directory / name.strip()).write_bytes(b"x")
        (directory / "job.sub").write_text(block + "\n")
        job = make(directory / "job.sub")
        assert job.hints == [] and job.warnings == [], block


def test_vmware_pool_forms_are_ready(tmp_path: Path) -> None:
    """The vmware_* conversions (d763aad063^ submit_utils.cpp:7120-7197, 7244-7280), for a VMware backend."""
    from vmgahp.run.submit import Context

    vm = tmp_path / "vm"
    vm.mkdir()
    for name in ("guest.vmx", "disk.vmdk", "notes.txt"):
        (vm / name).write_bytes(b"x")
    entries = {entry.command: entry for entry in LEGACY}

    def convert(command: str, value: str, **lines: str):
        d = load(write(tmp_path, {**CASES[0]["lines"], **lines}))
        ctx = Context(d, "vmware", tmp_path)
        return entries[command].convert(ctx, entries[command], command, value), ctx

    effect, ctx = convert("vmware_dir", "vm", vmware_should_transfer_files="true")
    assert effect.attrs == [("VMPARAM_VMware_Dir", f'"{vm}"'), ("VMPARAM_VMware_VMX_File", '"guest.vmx"'),
                            ("VMPARAM_VMware_VMDK_Files", '"disk.vmdk"')]
    assert effect.transfers == [str(vm / "disk.vmdk"), str(vm / "guest.vmx"), str(vm / "notes.txt")]
    effect, _ = convert("vmware_dir", "vm", vmware_should_transfer_files="false")
    assert effect.transfers == [str(vm / "guest.vmx")]  # only the .vmx travels
    effect, _ = convert("vmware_should_transfer_files", "true")
    assert effect.attrs == [("VMPARAM_VMware_Transfer", "true")]
    effect, _ = convert("vmware_snapshot_disk", "true")
    assert effect.attrs == [("VMPARAM_VMware_SnapshotDisk", "true")]
    with pytest.raises(SubmitError, match="vmware_snapshot_disk = false"):
        convert("vmware_snapshot_disk", "false", vmware_should_transfer_files="false")
