"""Tier 1: HTCondor knobs -> Settings (spec 5.1, section 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import libvirt_settings, settings
from vmgahp.drivers.libvirt.settings import LibvirtSettings
from vmgahp.gahp.config import ConfigError, Settings, settings_from


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

    @pytest.mark.parametrize("value", ["0", "-5", "abc", "", "  ", "512 MB", "1_024", "\u0661\u0662"])
    def test_invalid(self, value):
        """Zero, negative, non-numeric, non-ASCII digits, Python-only literals and empty
        VM_MEMORY are configuration errors (param_integer gives its default 0)."""
        with pytest.raises(ConfigError):
            settings(VM_MEMORY=value)

    @pytest.mark.parametrize(
        "value,expected",
        [("512 * 2", 1024), ("24105 * 3 / 4", 18078), ("(1 + 1) * 256", 512), ("2048.9", 2048),
         ("true", 1), ("+64", 64), ("99999999999999", 0x7FFFFFFF)],
    )
    def test_expression(self, value, expected):
        """param_integer evaluates a value that is not a plain number as a ClassAd expression
        (condor_config.cpp string_is_long_param): reals are truncated, booleans count 0/1,
        values beyond a C int are clamped."""
        assert settings(VM_MEMORY=value).vm_memory == expected

    def test_detected_memory_macro(self, tmp_path: Path):
        """The real configuration library expands $(DETECTED_MEMORY); the expression is then evaluated."""
        config = tmp_path / "condor_config"
        config.write_text("VM_MEMORY = $(DETECTED_MEMORY) * 3 / 4\n")
        out = _load_in_child(config, "print(s.vm_memory)")
        with open("/proc/meminfo") as meminfo:
            total_mib = int(meminfo.readline().split()[1]) // 1024
        assert abs(int(out) - total_mib * 3 // 4) <= 2

    def test_vm_max_number_is_not_read(self):
        """The startd evaluates VM_MAX_NUMBER; the gahp never reads it, so no value of it fails."""
        s = settings(VM_MAX_NUMBER="$(NUM_CPUS) garbage (")
        assert s.vm_memory == 1024 and s.warnings == ()


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
_BOOL_KNOBS = ("VM_NETWORKING", "VM_HARDWARE_VT", "VM_SOFT_SUSPEND", "XEN_ALLOW_HARDWARE_VT_SUSPEND")


def _flags(s: Settings) -> tuple[bool, ...]:
    xen, _ = LibvirtSettings.from_knobs(s.driver_knobs, "xen")  # a libvirt knob, read by its driver
    return (s.networking, s.hardware_vt, s.soft_suspend, xen.xen_allow_hardware_vt_suspend)


def _warnings(s: Settings) -> list[str]:
    return [*s.warnings, *LibvirtSettings.from_knobs(s.driver_knobs, "xen")[1]]


class TestBooleans:
    @pytest.mark.parametrize(
        "text,value",
        [
            ("true", True), ("TRUE", True), ("True", True), ("1", True), ("true  ", True),
            ("false", False), ("FALSE", False), ("0", False),
            # Not literals: ClassAd expressions, evaluated (string_is_boolean_param).
            ("1 == 1", True), ("2 > 3", False), ("5", True), ("0.0", False), ("TRUE && !FALSE", True),
        ],
    )
    def test_boolean_spellings(self, text, value):
        """HTCondor's boolean literals and boolean expressions, for every boolean knob."""
        s = settings(VM_NETWORKING_TYPE="nat", **{name: text for name in _BOOL_KNOBS})
        assert _flags(s) == (value,) * 4
        assert _warnings(s) == []

    @pytest.mark.parametrize("text", ["yes", "no", "t", "f", "on", "Y", "maybe", "true false"])
    def test_not_booleans_to_htcondor(self, text):
        """yes/no/t/f are attribute references to HTCondor, UNDEFINED, so the knob keeps its
        default (false) and the gahp says so in its log - it does not stop."""
        s = settings(VM_NETWORKING_TYPE="nat", **{name: text for name in _BOOL_KNOBS})
        assert _flags(s) == (False,) * 4
        assert len(_warnings(s)) == 4 and all("not a boolean" in w for w in _warnings(s))

    def test_boolean_defaults(self):
        """Boolean knobs default to false."""
        assert _flags(settings()) == (False,) * 4


# --------------------------------------------------------------------------- hypervisor knobs (section 9)
class TestHypervisorKnobs:
    """The libvirt driver's own knobs (drivers/libvirt/settings.py)."""

    def test_defaults(self):
        """Defaults: qemu:///session for KVM, xen:///system for Xen, domain type kvm."""
        assert libvirt_settings("kvm").uri == "qemu:///session"
        assert libvirt_settings("xen").uri == "xen:///system"
        assert libvirt_settings("kvm").domain_type == "kvm"

    def test_uri_overrides(self):
        """VM_KVM_LIBVIRT_URI and VM_XEN_LIBVIRT_URI replace the defaults."""
        knobs = dict(VM_KVM_LIBVIRT_URI="test:///default", VM_XEN_LIBVIRT_URI="xen+ssh://h/system")
        assert (libvirt_settings("kvm", **knobs).uri, libvirt_settings("xen", **knobs).uri) == (
            "test:///default", "xen+ssh://h/system")

    @pytest.mark.parametrize("value,expected", [("kvm", "kvm"), ("qemu", "qemu"), ("QEMU", "qemu"), (" kvm ", "kvm")])
    def test_domain_type_valid(self, value, expected):
        """VM_KVM_DOMAIN_TYPE accepts kvm or qemu in any case."""
        assert libvirt_settings(VM_KVM_DOMAIN_TYPE=value).domain_type == expected

    @pytest.mark.parametrize("value", ["xen", "hvf", "kqemu", "tcg", "kvm qemu"])
    def test_domain_type_invalid(self, value):
        """Any VM_KVM_DOMAIN_TYPE other than kvm or qemu is a configuration error."""
        with pytest.raises(ConfigError):
            libvirt_settings(VM_KVM_DOMAIN_TYPE=value)


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
        """A non-numeric VM_GAHP_REQ_TIMEOUT keeps its default with a warning, as
        param_integer does; it never stops the gahp."""
        s = settings(VM_GAHP_REQ_TIMEOUT="soon")
        assert (s.req_timeout, s.call_timeout) == (300, 270.0)
        assert any("VM_GAHP_REQ_TIMEOUT" in w for w in s.warnings)

    def test_req_timeout_expression(self):
        """Integer knobs are ClassAd expressions too."""
        assert settings(VM_GAHP_REQ_TIMEOUT="2 * 60").call_timeout == 90.0

    @pytest.mark.parametrize("value", ["'--debug /tmp/x", "\"unterminated", "a 'b c"])
    def test_xml_script_args_never_fail_start_up(self, value):
        """LIBVIRT_XML_SCRIPT_ARGS is only parsed at START: no value of it fails here."""
        s = settings(LIBVIRT_XML_SCRIPT_ARGS=value)
        assert libvirt_settings(LIBVIRT_XML_SCRIPT_ARGS=value).xml_script_args == value and s.warnings == ()


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
    env_knobs = {"_CONDOR_VM_NETWORKING": "true"}
    out = _load_in_child(config, "print(s.vm_memory, s.networking, ','.join(s.networking_types), s.call_timeout)",
                         env_knobs)
    assert out.split() == ["2048", "True", "nat,bridge", "270.0"]


def _load_in_child(config: Path, code: str, extra_env: dict[str, str] | None = None) -> str:
    """Run load_settings() in a fresh interpreter with CONDOR_CONFIG=config."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("_CONDOR_") and key != "CONDOR_CONFIG"
    }
    env["CONDOR_CONFIG"] = str(config)
    env.update(extra_env or {})
    program = "from vmgahp.gahp.config import load_settings\ns = load_settings()\n" + code + "\n"
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
