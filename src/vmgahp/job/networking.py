"""Which networking types this gahp offers (spec 4.6), as a pure function.

The configured ``VM_NETWORKING_TYPE`` list is filtered by what the host can
really provide: ``bridge`` needs ``VM_NETWORKING_BRIDGE_INTERFACE``; ``user``
needs a backend the hypervisor supports (the driver says: KVM has one, Xen none). The default type
falls back to ``user`` when it survived, else ``nat`` (the C++ rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vmgahp.settings import Settings


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    types: tuple[str, ...]  # empty: networking is off for this gahp
    default: str

    @property
    def enabled(self) -> bool:
        return bool(self.types)


def plan_networking(
    settings: Settings,
    user_supported: bool,
    host_provides: Callable[[str], bool] = lambda _type: True,
) -> NetworkPlan:
    """``host_provides(type)`` lets the driver drop what this host lacks
    (no ``default`` network for nat, a missing bridge): unlike the C++, the
    probe then advertises only what a job can really get (quirk Q9)."""
    if not settings.networking:
        return NetworkPlan((), "")
    types = [t for t in settings.networking_types if t in ("nat", "bridge", "user")]
    if not settings.bridge_interface and "bridge" in types:
        types.remove("bridge")
    if "user" in types and not user_supported:
        types.remove("user")
    types = [t for t in types if host_provides(t)]
    if not types:
        return NetworkPlan((), "")
    default = settings.networking_default_type
    if not default or default not in types:
        default = "user" if "user" in types else "nat"
    return NetworkPlan(tuple(types), default)
