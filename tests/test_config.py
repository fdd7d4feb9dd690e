"""Tier 1: HTCondor knobs -> Settings (spec 5.1, section 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmgahp.config import ConfigError, Settings, settings_from


def settings(**knobs: str) -> Settings:
    """Settings from a dict-backed getter; VM_MEMORY defaults to 1024 unless given."""
    knobs.setdefault("VM_MEMORY", "1024")
    values = {k: v for k, v in knobs.items() if v is not None}
    return settings_from(values.get)


# --------------------------------------------------------------------------- VM_MEMORY
class TestVmMemory:
    def test_value(self):
        """VM_MEMORY is read as an integer number of MiB."""
        assert settings(VM_MEMORY="2048").vm_memory == 2048

    def test_surrounding_blanks(self):
        """Blanks around the number are tolerated."""
        assert settings(VM_MEMORY=" 512 ").vm_memory == 512

    def test_missing(self):
        """A missing VM_MEMORY is a configuration error (the gahp exits 1)."""
        with pytest.raises(ConfigError):
            settings_from({}.get)

    @pytest.mark.parametrize("value", ["0", "-5", "abc", "", "  "])
    def test_invalid(self, value):
        """Zero, negative, non-numeric and empty VM_MEMORY are configuration errors."""
        with pytest.raises(ConfigError):
            settings(VM_MEMORY=value)


# --------------------------------------------------------------------------- networking knobs
class TestNetworkingKnobs:
    def test_type_list_split_lowered_unquoted(self):
        """VM_NETWORKING_TYPE is split on commas and blanks, lower-cased, quotes stripped."""
        s = settings(VM_NETWORKING="true", VM_NETWORKING_TYPE='"NAT",Bridge  user\t, ')
        assert s.networking is True
        assert s.networking_types == ("nat", "bridge", "user")

    def test_single_type(self):
        """A single type is a one-element list."""
        s = settings(VM_NETWORKING="true", VM_NETWORKING_TYPE="nat")
        assert (s.networking, s.networking_types) == (True, ("nat",))

    @pytest.mark.parametrize("value", [None, "", " , ", '""'])
    def test_empty_list_turns_networking_off(self, value):
        """With VM_NETWORKING on but no type listed, networking is off."""
        s = settings(VM_NETWORKING="true", VM_NETWORKING_TYPE=value)
        assert s.networking is False
        assert s.networking_types == ()

    def test_networking_off_by_default(self):
        """VM_NETWORKING defaults to false, whatever types are configured."""
        s = settings(VM_NETWORKING_TYPE="nat")
        assert s.networking is False

    def test_default_type_quotes_stripped_not_lowered(self):
        """VM_NETWORKING_DEFAULT_TYPE has its quotes stripped but keeps its case."""
        s = settings(VM_NETWORKING="true", VM_NETWORKING_TYPE="nat", VM_NETWORKING_DEFAULT_TYPE='"NAT"')
        assert s.networking_default_type == "NAT"

    def test_default_type_absent(self):
        """Without VM_NETWORKING_DEFAULT_TYPE the default type is empty."""
        assert settings().networking_default_type == ""

    def test_bridge_interface_quotes_stripped(self):
        """VM_NETWORKING_BRIDGE_INTERFACE has its quotes stripped."""
        assert settings(VM_NETWORKING_BRIDGE_INTERFACE='"br0"').bridge_interface == "br0"


# --------------------------------------------------------------------------- booleans
class TestBooleans:
    @pytest.mark.parametrize(
        "text,value",
        [
            ("true", True),
            ("TRUE", True),
            ("True", True),
            ("yes", True),
            ("1", True),
            ("T", True),
            ("t", True),
            ("false", False),
            ("FALSE", False),
            ("no", False),
            ("0", False),
            ("F", False),
            ("f", False),
        ],
    )
    def test_boolean_spellings(self, text, value):
        """HTCondor boolean spellings are understood for every boolean knob."""
        s = settings(
            VM_NETWORKING=text,
            VM_NETWORKING_TYPE="nat",
            VM_HARDWARE_VT=text,
            VM_SOFT_SUSPEND=text,
            XEN_ALLOW_HARDWARE_VT_SUSPEND=text,
        )
        assert (s.networking, s.hardware_vt, s.soft_suspend, s.xen_allow_hardware_vt_suspend) == (value,) * 4

    def test_boolean_defaults(self):
        """Boolean knobs default to false."""
        s = settings()
        assert (s.networking, s.hardware_vt, s.soft_suspend, s.xen_allow_hardware_vt_suspend) == (False,) * 4


# --------------------------------------------------------------------------- hypervisor knobs (section 9)
class TestHypervisorKnobs:
    def test_defaults(self):
        """Defaults: qemu:///session for KVM, xen:///system for Xen, domain type kvm."""
        s = settings()
        assert s.kvm_uri == "qemu:///session"
        assert s.xen_uri == "xen:///system"
        assert s.kvm_domain_type == "kvm"
        assert s.uri_for("kvm") == "qemu:///session"
        assert s.uri_for("xen") == "xen:///system"

    def test_uri_overrides(self):
        """VM_KVM_LIBVIRT_URI and VM_XEN_LIBVIRT_URI replace the defaults."""
        s = settings(VM_KVM_LIBVIRT_URI="test:///default", VM_XEN_LIBVIRT_URI="xen+ssh://h/system")
        assert (s.uri_for("kvm"), s.uri_for("xen")) == ("test:///default", "xen+ssh://h/system")

    @pytest.mark.parametrize("value,expected", [("kvm", "kvm"), ("qemu", "qemu"), ("QEMU", "qemu"), (" kvm ", "kvm")])
    def test_domain_type_valid(self, value, expected):
        """VM_KVM_DOMAIN_TYPE accepts kvm or qemu in any case."""
        assert settings(VM_KVM_DOMAIN_TYPE=value).kvm_domain_type == expected

    @pytest.mark.parametrize("value", ["xen", "hvf", "kqemu", "tcg", "kvm qemu"])
    def test_domain_type_invalid(self, value):
        """Any VM_KVM_DOMAIN_TYPE other than kvm or qemu is a configuration error."""
        with pytest.raises(ConfigError):
            settings(VM_KVM_DOMAIN_TYPE=value)


# --------------------------------------------------------------------------- timeouts
class TestTimeouts:
    def test_default_call_timeout(self):
        """The hypervisor-call deadline defaults to VM_GAHP_REQ_TIMEOUT (300) minus 30 s."""
        s = settings()
        assert s.req_timeout == 300
        assert s.call_timeout == 270.0

    def test_call_timeout_follows_req_timeout(self):
        """A configured VM_GAHP_REQ_TIMEOUT moves the call deadline with it."""
        s = settings(VM_GAHP_REQ_TIMEOUT="120")
        assert (s.req_timeout, s.call_timeout) == (120, 90.0)

    def test_req_timeout_not_a_number(self):
        """A non-numeric VM_GAHP_REQ_TIMEOUT is a configuration error."""
        with pytest.raises(ConfigError):
            settings(VM_GAHP_REQ_TIMEOUT="soon")


# --------------------------------------------------------------------------- the real HTCondor config
def test_load_settings_uses_htcondor_config(tmp_path: Path):
    """load_settings reads CONDOR_CONFIG with macro expansion and honours _CONDOR_ environment overrides."""
    config = tmp_path / "condor_config"
    config.write_text(
        textwrap.dedent(
            """\
            MEM = 2048
            VM_MEMORY = $(MEM)
            VM_NETWORKING = false
            VM_NETWORKING_TYPE = NAT, bridge
            """
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("_CONDOR_") and key != "CONDOR_CONFIG"
    }
    env["CONDOR_CONFIG"] = str(config)
    env["_CONDOR_VM_NETWORKING"] = "true"
    code = (
        "from vmgahp.config import load_settings\n"
        "s = load_settings()\n"
        "print(s.vm_memory, s.networking, ','.join(s.networking_types), s.call_timeout)\n"
    )
    python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    exe = str(python) if python.exists() else sys.executable
    done = subprocess.run([exe, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2048", "True", "nat,bridge", "270.0"]
