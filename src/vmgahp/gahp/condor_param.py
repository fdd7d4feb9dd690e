"""HTCondor's own configuration lookup, loaded as cheaply as possible.

Kept apart from :mod:`vmgahp.gahp.config` and free of heavy imports because it runs
in the start-up child on the path to the banner: the child reads the knobs
in :data:`KNOBS` and hands back plain strings.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: this module is on the banner path
if TYPE_CHECKING:
    from collections.abc import Callable

# The knobs every VM type shares (the gahp never reads VM_MAX_NUMBER: the
# startd evaluates it); each driver declares its own (drivers.registry).
CORE_KNOBS = (
    ("VM_MEMORY", "integer"), ("VM_NETWORKING", "boolean"), ("VM_NETWORKING_TYPE", "string"),
    ("VM_NETWORKING_DEFAULT_TYPE", "string"), ("VM_NETWORKING_BRIDGE_INTERFACE", "string"),
    ("VM_HARDWARE_VT", "boolean"), ("VM_SOFT_SUSPEND", "boolean"), ("VM_GAHP_LOG", "string"),
    ("VM_GAHP_DEBUG", "string"), ("VM_GAHP_REQ_TIMEOUT", "integer"), ("VM_GAHP_CALL_TIMEOUT", "integer"),
    ("VM_GAHP_SHUTDOWN_TIMEOUT", "integer"), ("VM_GAHP_WORKERS", "integer"),
    # The log (vmgahp.log_knobs): HTCondor's <SUBSYS> knobs for the VM_GAHP
    # subsystem, the time format every daemon log shares, and our format.
    ("MAX_VM_GAHP_LOG", "string"), ("MAX_NUM_VM_GAHP_LOG", "integer"), ("TRUNC_VM_GAHP_LOG_ON_OPEN", "boolean"),
    ("DEBUG_TIME_FORMAT", "string"), ("VM_GAHP_LOG_FORMAT", "string"),
)


def read_knobs(vm_type: str | None = None) -> dict[str, str]:
    """The shared knobs and ``vm_type``'s own that are set, as strings. Integer
    and boolean expressions are evaluated here, in the start-up child, with
    param_integer / param_boolean semantics, so the gahp itself never loads
    the ClassAd library for its configuration; an invalid one is left as
    written and the settings layer warns and uses the default."""
    from vmgahp.condor_syntax import condor_boolean, condor_integer
    from vmgahp.drivers.registry import knobs_for

    knobs = list(CORE_KNOBS) + [(k.name, k.kind) for k in (knobs_for(vm_type) if vm_type else ())]
    param = _param_getter()
    values = {}
    for name, kind in knobs:
        value = param(name)
        if value is None:
            continue
        text = str(value)
        if kind == "integer":
            number = condor_integer(text)
            text = text if number is None else str(number)
        elif kind == "boolean":
            flag = condor_boolean(text)
            text = text if flag is None else ("true" if flag else "false")
        values[name] = text
    return values


def _param_getter() -> Callable[[str], object]:
    """HTCondor's own ``param()`` lookup.

    The ``htcondor2`` package imports some twenty Python modules we do not
    need (50 ms, on the path to the banner); its compiled core, which holds
    the configuration code, loads in a third of that. Fall back to the public
    ``htcondor2.param`` if that private layout ever changes.
    """
    import importlib.util

    spec = importlib.util.find_spec("htcondor2")
    try:
        assert spec is not None and spec.submodule_search_locations
        location = next(iter(spec.submodule_search_locations))
        candidates = [n for n in os.listdir(location) if n.startswith("htcondor2_impl.")]
        impl_spec = importlib.util.spec_from_file_location(
            "htcondor2_impl", os.path.join(location, candidates[0])
        )
        assert impl_spec is not None and impl_spec.loader is not None
        _use_null_config_if_none()  # before the module's init reads the config
        impl = importlib.util.module_from_spec(impl_spec)
        impl_spec.loader.exec_module(impl)
        lookup = impl._param__getitem__

        def get(name: str) -> object:
            try:
                return lookup(name)
            except KeyError:
                return None

        get("VM_MEMORY")
        return get
    except Exception:
        import htcondor2

        return htcondor2.param.get


def _use_null_config_if_none() -> None:
    # What htcondor2 does on import: without any configuration file HTCondor
    # refuses to start, so point it at an empty one.
    if "CONDOR_CONFIG" in os.environ:
        return
    paths = ("/etc/condor/condor_config", "/usr/local/etc/condor_config",
             os.path.expanduser("~condor/condor_config"))
    if not any(os.path.isfile(path) for path in paths):
        os.environ["CONDOR_CONFIG"] = "/dev/null"


