"""Structured logging to ``VM_GAHP_LOG`` or stderr, never stdout.

One event a line, JSON (the default) or HTCondor's text layout
(``VM_GAHP_LOG_FORMAT = text``, :mod:`vmgahp.log_text`). Every event carries
``job_id`` (``ClusterId.ProcId``, bound for the whole process with
:func:`bind_job` once the job ad is known), ``req_id`` and ``vm_id`` (null
when the event belongs to no request); workers bind the latter two with
:func:`bound`. The file is shared by every gahp of the machine and rotated
as HTCondor rotates a daemon log (:mod:`vmgahp.log_file`).

structlog is imported on first use, not at start-up, so that the banner and
the probe stay fast.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False  # not typing's: this module is on the banner path
if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from typing import Any, Callable

    from vmgahp.log_file import LogFile
    from vmgahp.log_knobs import LogOptions

_lock = _thread.allocate_lock()  # threading costs 5 ms of imports
_logger: Any = None
_target: dict[str, Any] = {"path": "", "debug": False, "terminal": False, "options": None}
_files: dict[tuple[str, Any], LogFile] = {}  # one per path and options, kept across setup()
_process_ids: dict[str, Any] = {"job_id": None}


def setup(path: str = "", debug: bool = False, terminal: bool = False, options: LogOptions | None = None) -> None:
    """Choose where and how logs go. Cheap: nothing is opened or imported yet."""
    global _logger
    with _lock:
        _target.update(path=path, debug=debug, terminal=terminal, options=options)
        _logger = None


def options_from(get: Callable[[str], str | None]) -> LogOptions:
    """The log options of a knob lookup (warnings are the settings' to report)."""
    from vmgahp.log_knobs import options_from as read

    return read(get)[0]


def bind_job(job_id: str | None) -> None:
    """Put ``job_id`` on every later line of this process (all threads)."""
    _process_ids["job_id"] = job_id


def job_id_from_ad(ad_lines: tuple[str, ...] | list[str] | None) -> str | None:
    """``ClusterId.ProcId`` from the job ad's ``Name = value`` lines (the
    starter sends both even when it does not send the whole ad), or None."""
    found: dict[str, str] = {}
    for line in ad_lines or ():
        name, equals, value = line.partition("=")
        name = name.strip().lower()
        if equals and name in ("clusterid", "procid"):
            value = value.strip()
            if value.isascii() and value.isdigit():
                found[name] = str(int(value))
    if "clusterid" not in found:
        return None
    return f"{found['clusterid']}.{found.get('procid', '0')}"


def _add_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("job_id", _process_ids["job_id"])
    event.setdefault("req_id", None)
    event.setdefault("vm_id", None)
    return event


class _Sink:
    """structlog's logger: each rendered event is one ``write``. A log that
    cannot be written (a full disk) never fails the caller."""

    def __init__(self, log_file: LogFile | None, direct: Callable[[str, str, dict[str, Any]], str]) -> None:
        self._file = log_file
        self._direct = direct  # renders an event of our own (a note from the log file)

    def msg(self, message: str) -> None:
        if self._file is None:
            try:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            return
        try:
            self._file.write((message + "\n").encode("utf-8", "backslashreplace"))
            for note in self._file.take_notes():  # what went wrong with the file itself
                self._file.write(self._direct("log_trouble", "warning", {"detail": note}).encode())
        except OSError:
            pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _open_file(path: str, options: LogOptions, direct: Callable[..., str]) -> tuple[LogFile | None, str | None]:
    from vmgahp.log_file import LogFile

    def announce(previous: str, size: int) -> bytes:
        return direct("log_rotated", "info", {"previous": previous, "size": size}).encode()

    key = (path, options)
    log_file = _files.get(key)
    if log_file is None:
        log_file = LogFile(path, options)
    log_file.announce = announce  # in this process's words (its pid, after a fork)
    try:
        log_file.ensure_open()
    except OSError as exc:
        return None, f"cannot open VM_GAHP_LOG {path!r}: {exc}; logging to stderr"
    _files[key] = log_file
    return log_file, None


def get() -> Any:
    """The process logger (structlog BoundLogger), configured on first call."""
    global _logger
    if _logger is not None:
        return _logger
    with _lock:
        if _logger is None:
            import logging

            import structlog

            from vmgahp.log_knobs import LogOptions

            options = _target["options"] or LogOptions()
            if options.format == "text":
                from vmgahp.log_text import TextRenderer

                renderer: Any = TextRenderer(options.time_format, options.categories, options.sub_second)
                stamp: list[Any] = []
            else:
                renderer = structlog.processors.JSONRenderer(sort_keys=False)
                stamp = [structlog.processors.TimeStamper(fmt="iso", utc=True)]
            pid = os.getpid()

            def direct(name: str, level: str, fields: dict[str, Any]) -> str:
                event = _add_ids(None, level, {"pid": pid, "event": name, **fields, "level": level})
                for processor in stamp:
                    event = processor(None, level, event)
                return renderer(None, level, event) + "\n"

            path, warning = _target["path"], None
            log_file = None
            if path and not _target["terminal"]:
                log_file, warning = _open_file(path, options, direct)
            sink = _Sink(log_file, direct)
            level = logging.DEBUG if _target["debug"] else logging.INFO
            structlog.configure(
                processors=[
                    structlog.contextvars.merge_contextvars,
                    _add_ids,
                    structlog.processors.add_log_level,
                    *stamp,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                wrapper_class=structlog.make_filtering_bound_logger(level),
                logger_factory=lambda *_args: sink,
                cache_logger_on_first_use=True,
            )
            _logger = structlog.get_logger().bind(pid=pid)
            if warning:
                _logger.warning("log_fallback", detail=warning)
    return _logger


class bound:  # noqa: N801 - used like a function: ``with log.bound(req_id=2):``
    """Bind ids (req_id, vm_id, ...) to every log line of this thread's block."""

    def __init__(self, **ids: Any) -> None:
        self._ids = ids
        self._tokens: Any = None

    def __enter__(self) -> None:
        get()
        import structlog

        self._tokens = structlog.contextvars.bind_contextvars(**self._ids)

    def __exit__(self, *exc: object) -> None:
        import structlog

        structlog.contextvars.reset_contextvars(**self._tokens)


def _after_fork_in_child() -> None:
    """A forked child logs with its own pid (and its own descriptor, see
    log_file); the lock may have been held by another thread at the fork."""
    global _lock, _logger
    _lock = _thread.allocate_lock()
    _logger = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def early_error(message: str) -> None:
    """A fatal start-up message for stderr, as the C++ gahp prints them."""
    try:
        sys.stderr.write(f"\nERROR: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass
