"""Tier 1: what this host offers a KVM guest (drivers/libvirt/host.py) and the
defaults vmgahp run takes from it (run/defaults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmgahp.drivers.libvirt.host import hardware_virtualization, local_defaults
from vmgahp.run.defaults import choose, host_memory_mib


def fake_host(tmp_path: Path, *, flags: str = "", modules: tuple[str, ...] = (), kvm: bool = True) -> Path:
    (tmp_path / "dev").mkdir()
    if kvm:
        (tmp_path / "dev/kvm").write_bytes(b"")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu pae {flags}\n")
    for name in modules:
        (tmp_path / "sys/module" / name).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "modules", "works", "why"),
    [
        ("vmx", ("kvm", "kvm_intel"), True, "Intel VT-x"),
        ("svm", ("kvm", "kvm_amd"), True, "AMD-V"),
        # This machine: /dev/kvm answers, served by a nested PVM hypervisor; no vmx/svm.
        ("", ("kvm", "kvm_pvm"), False, "served by kvm_pvm"),
        ("vmx", ("kvm",), False, "neither kvm_intel nor kvm_amd"),
        ("", ("kvm",), False, "no vmx/svm"),
    ],
)
def test_hardware_virtualization_on_x86(tmp_path, flags, modules, works, why) -> None:
    root = fake_host(tmp_path, flags=flags, modules=modules)
    verdict = hardware_virtualization(root, machine="x86_64", ask_device=False)
    assert verdict[0] is works and why in verdict[1]


def test_no_kvm_device(tmp_path) -> None:
    root = fake_host(tmp_path, flags="vmx", modules=("kvm_intel",), kvm=False)
    works, why = hardware_virtualization(root, machine="x86_64", ask_device=False)
    assert not works and "/dev/kvm cannot be opened" in why


def test_aarch64_needs_only_the_device(tmp_path) -> None:
    root = fake_host(tmp_path)
    assert hardware_virtualization(root, machine="aarch64", ask_device=False)[0] is True


def test_this_machine_is_software_emulation() -> None:
    """ENVIRONMENT.md: /dev/kvm exists here but guests hang under kvm_pvm; the real
    check (ioctl included) must say no, whatever libvirt's capabilities claim."""
    if not Path("/sys/module/kvm_pvm").is_dir():
        pytest.skip("not a kvm_pvm machine")
    works, why = hardware_virtualization()
    assert not works and "kvm_pvm" in why


def test_local_defaults_only_fill_unset_knobs() -> None:
    assert local_defaults("kvm", lambda knob: True) == []
    knobs = [knob for knob, _, _ in local_defaults("kvm", lambda knob: knob != "VM_KVM_DOMAIN_TYPE")]
    assert knobs == ["VM_KVM_DOMAIN_TYPE"]


def test_choose_memory_from_the_host(tmp_path) -> None:
    chosen = {d.knob: d for d in choose("kvm", lambda knob: knob != "VM_MEMORY")}
    assert set(chosen) == {"VM_MEMORY"}
    assert int(chosen["VM_MEMORY"].value) == host_memory_mib() * 3 // 4
