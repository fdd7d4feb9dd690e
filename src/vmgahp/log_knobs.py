"""The log's knobs: HTCondor's ``MAX_<SUBSYS>_LOG`` size syntax and the rest.

``MAX_VM_GAHP_LOG`` and ``MAX_NUM_VM_GAHP_LOG`` are HTCondor's per-subsystem
log knobs (``src/condor_utils/dprintf_config.cpp``, ``dprintf_config``), read
as it reads them; ``VM_GAHP_LOG_FORMAT`` is vmgahp's own; ``DEBUG_TIME_FORMAT``
and the header flags of ``VM_GAHP_DEBUG`` shape the text lines
(:mod:`vmgahp.log_text`). What the file does with them is
:mod:`vmgahp.log_file`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

DEFAULT_MAX_SIZE = 10 * 1024 * 1024  # dprintf_config.cpp: def_max_log, and MAX_DEFAULT_LOG = 10 Mb
DEFAULT_TIME_FORMAT = "%m/%d/%y %H:%M:%S"  # DEBUG_TIME_FORMAT's default (param_info.in)
FORMATS = ("json", "text")
_C_SPACE = b" \t\n\v\f\r"  # isspace() in the C locale


def parse_log_size(text: str) -> tuple[int, bool] | None:
    """``dprintf_parse_log_size``: ``(value, is_time)``, or None if invalid.

    An integer, then an optional unit of which only the first letters count:
    ``B``, ``K``, ``M``/``Mb``/``MiB``, ``G``, ``T`` are bytes times 1024^n;
    ``S``, ``m``/``min``/``Mi``, ``H``, ``D``, ``W`` are times. An unknown
    letter leaves the number as bytes. A bare ``m`` is minutes, a bare ``M``
    megabytes. Only blanks may follow."""
    data = text.encode("utf-8", "surrogateescape")
    end = len(data)
    p = 0
    while p < end and data[p] in _C_SPACE:
        p += 1
    start = p
    if p < end and data[p] in b"+-":
        p += 1
    digits = p
    while p < end and 48 <= data[p] <= 57:
        p += 1
    if p == digits:
        return None
    value = int(data[start:p])
    while p < end and data[p] in _C_SPACE:
        p += 1
    is_time = False
    if p < end:
        ch = data[p]
        p += 1
        ch2 = data[p] & ~0x20 if p < end else 0  # the C code consumes any next byte but NUL
        p += 1 if ch2 else 0
        ch3 = data[p] & ~0x20 if p < end and ch2 else 0
        p += 1 if ch3 else 0
        while p < end and (65 <= data[p] <= 90 or 97 <= data[p] <= 122):
            p += 1
        unit = chr(ch).upper()
        scale = {"S": 1, "H": 3600, "D": 86400, "W": 604800}.get(unit)
        if scale is not None:
            is_time, value = True, value * scale
        elif unit in "KGT":
            value *= 1024 ** "_KMGT".index(unit)
        elif unit == "M":
            if ch2:
                if ch2 == ord("B"):
                    is_time = False
                elif ch2 == ord("I"):
                    is_time = ch3 != ord("B")
                else:
                    return None
            else:
                is_time = ch == ord("m")
            value *= 60 if is_time else 1024 * 1024
        while p < end and data[p] in _C_SPACE:
            p += 1
    return (value, is_time) if p >= end else None


class LogOptions(NamedTuple):
    """How VM_GAHP_LOG is written: rotation, line format and header."""

    max_size: int = DEFAULT_MAX_SIZE  # bytes; 0: never rotate
    max_num: int = 1  # old files kept
    format: str = "json"  # or "text"
    time_format: str = DEFAULT_TIME_FORMAT  # text lines
    categories: bool = False  # text lines: (D_ALWAYS) etc. (D_CAT in VM_GAHP_DEBUG)
    sub_second: bool = False  # text lines: milliseconds (D_SUB_SECOND)


def options_from(get: Callable[[str], str | None]) -> tuple[LogOptions, list[str]]:
    """The log knobs read from ``get`` (a knob lookup), and a warning for each
    value that cannot be used (its default is used instead)."""
    warnings: list[str] = []
    max_size = DEFAULT_MAX_SIZE
    raw = get("MAX_VM_GAHP_LOG")
    if raw is not None and raw.strip():
        parsed = parse_log_size(raw)
        if parsed is None or parsed[0] < 0:
            warnings.append(f"MAX_VM_GAHP_LOG = {raw!r} is not a size (an integer >= 0, then a unit such as "
                            f"Kb or Mb); using {DEFAULT_MAX_SIZE} bytes")
        elif parsed[1]:
            # dprintf_config.cpp refuses a time for MAX_DEFAULT_LOG: time rotation
            # does not work with several writers, and every gahp writes this log.
            warnings.append(f"MAX_VM_GAHP_LOG = {raw!r} is a time; the log is shared by every VM GAHP, so "
                            f"it rotates by size only; using {DEFAULT_MAX_SIZE} bytes")
        else:
            max_size = parsed[0]
    max_num = 1
    raw = get("MAX_NUM_VM_GAHP_LOG")
    if raw is not None and raw.strip():
        from vmgahp.condor_syntax import condor_integer

        number = condor_integer(raw)
        if number is None or number < 0:  # param_integer(name, 1, 0): at least 0
            warnings.append(f"MAX_NUM_VM_GAHP_LOG = {raw!r} is not an integer >= 0; using 1")
        else:
            max_num = number
    fmt = (get("VM_GAHP_LOG_FORMAT") or "json").replace('"', "").strip().lower() or "json"
    if fmt not in FORMATS:
        warnings.append(f"VM_GAHP_LOG_FORMAT = {fmt!r} is neither json nor text; using json")
        fmt = "json"
    trunc = (get("TRUNC_VM_GAHP_LOG_ON_OPEN") or "").strip().lower()
    if trunc in ("true", "1"):
        warnings.append("TRUNC_VM_GAHP_LOG_ON_OPEN is ignored: every VM GAHP of this machine appends to "
                        "VM_GAHP_LOG, and truncating it at each start would erase the other jobs' lines")
    time_format = (get("DEBUG_TIME_FORMAT") or "").strip()
    if time_format.startswith('"'):  # dprintf_config.cpp skips enclosing quotes
        time_format = time_format[1:].split('"', 1)[0]
    words = (get("VM_GAHP_DEBUG") or "").upper().replace(",", " ").replace("|", " ").split()
    flags = {word.split(":", 1)[0].lstrip("+") for word in words}
    options = LogOptions(
        max_size=max_size,
        max_num=max_num,
        format=fmt,
        time_format=time_format or DEFAULT_TIME_FORMAT,
        categories=bool(flags & {"D_CAT", "D_CATEGORY", "D_LEVEL", "D_ALL"}),
        sub_second="D_SUB_SECOND" in flags,
    )
    return options, warnings
