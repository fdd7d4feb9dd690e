"""Structured logging: JSON lines to ``VM_GAHP_LOG`` or stderr, never stdout.

structlog is imported on first use, not at start-up, so that the banner and
the probe stay fast. Every event carries ``req_id`` and ``vm_id`` (null when
the event belongs to no request); workers bind them with :func:`bound`.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False  # not typing's: this module is on the banner path
if TYPE_CHECKING:
    from typing import Any

_lock = _thread.allocate_lock()  # threading costs 5 ms of imports
_logger: Any = None
_target: dict[str, Any] = {"path": "", "debug": False, "terminal": False}


def setup(path: str = "", debug: bool = False, terminal: bool = False) -> None:
    """Choose where logs go. Cheap: nothing is opened or imported yet."""
    global _logger
    with _lock:
        _target.update(path=path, debug=debug, terminal=terminal)
        _logger = None


def _open_stream() -> tuple[Any, str | None]:
    path = _target["path"]
    if _target["terminal"] or not path:
        return sys.stderr, None
    try:
        return open(path, "a", buffering=1, encoding="utf-8"), None  # noqa: SIM115
    except OSError as exc:
        return sys.stderr, f"cannot open VM_GAHP_LOG {path!r}: {exc}; logging to stderr"


def _add_ids(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("req_id", None)
    event.setdefault("vm_id", None)
    return event


def get() -> Any:
    """The process logger (structlog BoundLogger), configured on first call."""
    global _logger
    if _logger is not None:
        return _logger
    with _lock:
        if _logger is None:
            import logging

            import structlog

            stream, warning = _open_stream()
            level = logging.DEBUG if _target["debug"] else logging.INFO
            structlog.configure(
                processors=[
                    structlog.contextvars.merge_contextvars,
                    _add_ids,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(sort_keys=False),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(level),
                logger_factory=structlog.WriteLoggerFactory(file=stream),
                cache_logger_on_first_use=True,
            )
            _logger = structlog.get_logger().bind(pid=os.getpid())
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


def early_error(message: str) -> None:
    """A fatal start-up message for stderr, as the C++ gahp prints them."""
    try:
        sys.stderr.write(f"\nERROR: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass
