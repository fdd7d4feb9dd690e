"""Tier 1: networking resolution at START (spec 4.6, Q9)."""

from __future__ import annotations

from vmgahp.gahp.config import Settings
from vmgahp.job.networking import NetworkPlan, plan_networking


def cfg(types: tuple[str, ...], default: str = "", bridge: str = "", networking: bool = True) -> Settings:
    return Settings(
        vm_memory=1024,
        networking=networking,
        networking_types=types,
        networking_default_type=default,
        bridge_interface=bridge,
    )


def test_networking_off_gives_empty_plan():
    """With VM_NETWORKING off the plan has no types and networking is disabled."""
    plan = plan_networking(cfg(("nat", "bridge"), "nat", "br0", networking=False), True)
    assert plan == NetworkPlan((), "")
    assert plan.enabled is False


def test_no_types_networking_off():
    """With networking on but no types configured, networking is off."""
    plan = plan_networking(cfg(()), True)
    assert (plan.types, plan.enabled) == ((), False)


def test_bridge_dropped_without_interface():
    """bridge is removed when no VM_NETWORKING_BRIDGE_INTERFACE is configured."""
    plan = plan_networking(cfg(("nat", "bridge")), False)
    assert plan.types == ("nat",)


def test_bridge_kept_with_interface():
    """bridge stays when an interface is configured."""
    plan = plan_networking(cfg(("nat", "bridge"), bridge="br0"), False)
    assert plan.types == ("nat", "bridge")


def test_only_bridge_without_interface_turns_networking_off():
    """If bridge was the only type and has no interface, nothing is left and networking is off."""
    plan = plan_networking(cfg(("bridge",), "bridge"), True)
    assert plan == NetworkPlan((), "")
    assert plan.enabled is False


def test_user_kept_for_kvm_with_support():
    """user survives only for KVM when the host supports it."""
    plan = plan_networking(cfg(("nat", "user")), True)
    assert plan.types == ("nat", "user")


def test_user_dropped_for_kvm_without_support():
    """user is removed for KVM when the host cannot provide it."""
    plan = plan_networking(cfg(("nat", "user")), False)
    assert plan.types == ("nat",)


def test_xen_always_loses_user():
    """Xen never keeps user, whatever the host supports: its driver offers no user backend."""
    from helpers import hypervisor

    xen = hypervisor("xen", VM_NETWORKING="true", VM_NETWORKING_TYPE="user, nat",
                     VM_NETWORKING_BRIDGE_INTERFACE="br0", XEN_BOOTLOADER="/bin/true")
    assert xen._user_supported() is False
    assert xen.network_plan().types == ("nat",)
    assert plan_networking(cfg(("user", "nat"), bridge="br0"), xen._user_supported()).types == ("nat",)


def test_only_user_on_xen_networking_off():
    """Xen with only user configured ends up with networking off."""
    from helpers import hypervisor

    xen = hypervisor("xen", VM_NETWORKING="true", VM_NETWORKING_TYPE="user", XEN_BOOTLOADER="/bin/true")
    assert xen.network_plan().enabled is False


def test_explicit_valid_default_kept():
    """A configured default that survived filtering is kept."""
    plan = plan_networking(cfg(("nat", "bridge", "user"), "bridge", "br0"), True)
    assert plan.default == "bridge"


def test_empty_default_falls_back_to_user():
    """No default configured and user survived: the default becomes user."""
    plan = plan_networking(cfg(("nat", "user")), True)
    assert plan.default == "user"


def test_empty_default_falls_back_to_nat():
    """No default configured and no user: the default becomes nat."""
    plan = plan_networking(cfg(("nat", "bridge"), bridge="br0"), True)
    assert plan.default == "nat"


def test_dropped_default_falls_back():
    """A default whose type was filtered out (bridge without interface) falls back to user, then nat."""
    assert plan_networking(cfg(("bridge", "user", "nat"), "bridge"), True).default == "user"
    assert plan_networking(cfg(("bridge", "nat"), "bridge"), True).default == "nat"


def test_default_falls_back_to_nat_even_when_nat_not_listed():
    """The C++ quirk (Q9): with only bridge left the default still becomes nat."""
    plan = plan_networking(cfg(("bridge",), bridge="br0"), False)
    assert plan.types == ("bridge",)
    assert plan.default == "nat"


def test_default_not_in_list_falls_back():
    """A configured default that is not in the list is replaced."""
    plan = plan_networking(cfg(("nat",), "bridge", "br0"), True)
    assert plan.default == "nat"


def test_default_case_sensitive():
    """The default is not lower-cased, so 'NAT' is not in the list and is replaced by the fallback."""
    plan = plan_networking(cfg(("nat", "user"), "NAT"), True)
    assert plan.default == "user"


def test_unknown_types_ignored():
    """Types other than nat, bridge and user are dropped."""
    plan = plan_networking(cfg(("nat", "macvtap")), True)
    assert plan.types == ("nat",)


def test_settings_not_mutated():
    """Planning does not change the Settings it reads (it is recomputed at every START)."""
    s = cfg(("nat", "bridge", "user"))
    plan_networking(s, False)
    assert s.networking_types == ("nat", "bridge", "user")
    assert s.networking_default_type == ""
