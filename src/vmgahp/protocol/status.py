"""The STATUS result text (spec 3.12): built by the gahp, read by the starter.

:func:`format_status` writes exactly what the C++ KVM/Xen gahp writes::

    [MAC=<mac>] [IP=<ip>] STATUS=<state>[ CPUUTILIZATION=%f CPUTIME=%f[ MEMORY=%lu][ MAXMEMORY=%lu]]

:func:`parse_status` reads it as condor_starter does (``process_vm_status_result``
with ``parse_param_string``, spec 6.4): ``NAME=VALUE`` words, names compared
case-insensitively (ASCII, as ``strcasecmp``), blanks and surrounding quotes
stripped from values, unknown names and words without ``=`` ignored, a later
word overriding an earlier one; numbers read with C's ``strtod``/``strtol``
(``CPUTIME=1.5s`` is 1.5, ``CPUTIME=x`` is 0).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from vmgahp.protocol.wire import strtod, strtol

# The states the starter acts on; any other value is one status error.
STATES = ("Running", "Suspended", "SoftSuspended", "Stopped")
_BLANKS = " \t\r\n\v\f"  # C trim()
_QUOTES = "\"'"


class Status(NamedTuple):
    """One STATUS result as the starter reads it; ``None``: the word was absent."""

    state: str
    cpu_time: Optional[float] = None  # seconds; absent also when <= 0 (the starter keeps the old figure)
    utilization: Optional[float] = None
    memory_kib: Optional[int] = None
    max_memory_kib: Optional[int] = None
    pid: Optional[int] = None  # 0 when <= 0; only VMware sent one
    mac: Optional[str] = None  # only VMware sent MAC and IP
    ip: Optional[str] = None


def format_status(
    state: str,
    *,
    utilization: float | None = None,
    cpu_time: float | None = None,
    memory_kib: int | None = 0,
    max_memory_kib: int | None = 0,
    mac: str = "",
    ip: str = "",
) -> str:
    """The STATUS text. The CPU pair comes together (the C++ writes it for a
    running VM only), the memory figures only with it and only when non-zero."""
    words = [f"MAC={mac}"] if mac else []
    if ip:
        words.append(f"IP={ip}")
    words.append(f"STATUS={state}")
    if utilization is None and cpu_time is None:
        if memory_kib or max_memory_kib:
            raise ValueError("MEMORY and MAXMEMORY come only with CPUUTILIZATION and CPUTIME")
        return " ".join(words)
    if utilization is None or cpu_time is None:
        raise ValueError("CPUUTILIZATION and CPUTIME come together")
    words += [f"CPUUTILIZATION={utilization:f}", f"CPUTIME={cpu_time:f}"]  # printf %f: 6 decimals
    if memory_kib:
        words.append(f"MEMORY={memory_kib:d}")
    if max_memory_kib:
        words.append(f"MAXMEMORY={max_memory_kib:d}")
    return " ".join(words)


def parse_status(text: str) -> Status | None:
    """The starter's reading of a STATUS text; ``None`` without a ``STATUS`` value."""
    fields: dict[str, str] = {}
    for word in text.split(" "):  # read_argv's words: only a space separates
        name, sep, value = word.partition("=")
        name = name.strip(_BLANKS)
        if not sep or not name or not name.isascii():  # parse_param_string: no '=', or '=' first
            continue
        fields[name.upper()] = value.strip(_BLANKS).strip(_QUOTES).strip(_BLANKS)
    state = fields.get("STATUS")
    if not state:
        return None
    cpu_time = strtod(fields["CPUTIME"]) if "CPUTIME" in fields else None
    return Status(
        state=state,
        cpu_time=cpu_time if cpu_time is not None and cpu_time > 0 else None,
        utilization=strtod(fields["CPUUTILIZATION"]) if "CPUUTILIZATION" in fields else None,
        memory_kib=strtol(fields["MEMORY"]) if "MEMORY" in fields else None,
        max_memory_kib=strtol(fields["MAXMEMORY"]) if "MAXMEMORY" in fields else None,
        pid=max(0, strtol(fields["PID"])) if "PID" in fields else None,
        mac=fields.get("MAC"),
        ip=fields.get("IP"),
    )
