"""HTCondor's one-line daemon-log layout, for ``VM_GAHP_LOG_FORMAT = text``.

A dprintf line (``src/condor_utils/dprintf.cpp`` ``_format_global_header``)
is the time in ``DEBUG_TIME_FORMAT`` (``%m/%d/%y %H:%M:%S``), with
``.mmm`` under ``D_SUB_SECOND``, then ``(pid:N)`` under ``D_PID``, then
``(D_ALWAYS)`` / ``(D_ERROR)`` / ``(D_ALWAYS:2)`` (a D_FULLDEBUG line) under
``D_CAT``, then the message. Every gahp of the machine writes this file, so
the pid is always there; then come the ids, then the event and its fields::

    12/01/26 22:04:04 (pid:1234) [job 42.0 req 7 vm 1] request_done command=CONDOR_VM_STATUS result=NULL

An id that does not apply is ``-``. A value with blanks, quotes or ``=`` is
written as a JSON string (one line, whatever it holds); warnings and errors
begin ``WARNING:`` / ``ERROR:`` as HTCondor's own messages do; a traceback
follows its line, each of its lines indented by a tab (all in one write).
"""

from __future__ import annotations

import json
import time
from typing import Any

from vmgahp.log_knobs import DEFAULT_TIME_FORMAT

_CATEGORY = {"debug": "(D_ALWAYS:2)", "info": "(D_ALWAYS)", "warning": "(D_ALWAYS)", "error": "(D_ERROR)",
             "critical": "(D_ERROR)", "exception": "(D_ERROR)"}
_PREFIX = {"warning": "WARNING: ", "error": "ERROR: ", "critical": "ERROR: ", "exception": "ERROR: "}
_HEADER_KEYS = ("pid", "job_id", "req_id", "vm_id", "level", "event", "exception", "timestamp")
_PLAIN_UNSAFE = frozenset(' \t\r\n\v\f"\'=\\')


def value_text(value: Any) -> str:
    """A field value as it appears after ``name=``."""
    if isinstance(value, str):
        if value and value.isprintable() and not _PLAIN_UNSAFE.intersection(value):
            return value
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _id(value: Any) -> str:
    return "-" if value is None else str(value)


class TextRenderer:
    """The structlog processor that renders an event as a text line."""

    def __init__(self, time_format: str = DEFAULT_TIME_FORMAT, categories: bool = False,
                 sub_second: bool = False) -> None:
        self.time_format = time_format
        self.categories = categories
        self.sub_second = sub_second
        self._second = -1
        self._stamp = ""

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a line
            self._stamp = time.strftime(self.time_format, time.localtime(second))
            self._second = second
        if self.sub_second:
            return f"{self._stamp}.{int((now - second) * 1000):03d}"
        return self._stamp

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        level = event.get("level", "info")
        parts = [self._time(), f"(pid:{event.get('pid', '?')})"]
        if self.categories:
            parts.append(_CATEGORY.get(level, "(D_ALWAYS)"))
        parts.append(f"[job {_id(event.get('job_id'))} req {_id(event.get('req_id'))} vm {_id(event.get('vm_id'))}]")
        parts.append(_PREFIX.get(level, "") + str(event.get("event", "")))
        parts.extend(f"{key}={value_text(value)}" for key, value in event.items() if key not in _HEADER_KEYS)
        line = " ".join(parts)
        trace = event.get("exception")
        if trace:
            line += "".join(f"\n\t{row}" for row in str(trace).splitlines())
        return line
