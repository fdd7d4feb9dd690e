"""What a libvirt error means: gone domain, dead connection, refused flag.

libvirt reports every failure as one exception type carrying a numeric code
and an error domain (the subsystem that raised it); these predicates turn the
combinations the driver reacts to into names.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import libvirt

from vmgahp.drivers.base import HostError, HypervisorError

# Error domains of the client-side transport: an internal or system error
# raised there means the connection itself broke, not the request.
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_RPC})
_TRANSPORT_CODES = frozenset({libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR})
_DEAD_CODES = frozenset({libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_NO_CONNECT})
# Drivers refuse an unknown flag with one of these (the test driver: INVALID_ARG,
# "unsupported flags (0x2) in function ...").
_FLAG_CODES = frozenset(
    {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}
)

T = TypeVar("T")


class UndecodableError(libvirt.libvirtError):
    """A libvirt error whose text is not UTF-8.

    QEMU's complaint about a damaged save image quotes the image's bytes, and
    libvirt-python cannot decode them: the call then raises SystemError (its
    error callback failed) and ``libvirtError()`` itself raises
    UnicodeDecodeError (it reads the same last error). This carries what can
    be read, so the callers' ``except libvirtError`` sees an ordinary error.
    """

    def __init__(self, text: bytes) -> None:
        message = text.decode("utf-8", "replace")
        Exception.__init__(self, message)
        code, domain = libvirt.virGetLastErrorCode(), libvirt.virGetLastErrorDomain()
        # The shape of libvirt's error tuple, so get_error_code() and friends work.
        self.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
        # A libvirtError() made later in this thread with no new failure would read it again.
        libvirt.virResetLastError()


def readable(fn: Callable[[], T]) -> T:
    """``fn()``, a libvirt call, with an undecodable error turned into
    :class:`UndecodableError`."""
    try:
        return fn()
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if not isinstance(cause, UnicodeDecodeError) or not isinstance(cause.object, bytes):
            raise
        raise UndecodableError(cause.object) from exc
    except UnicodeDecodeError as exc:
        if not isinstance(exc.object, bytes):
            raise
        raise UndecodableError(exc.object) from exc


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_code()
    return None


def error_message(exc: BaseException) -> str:
    """libvirt's own text, without the binding's "virXxx() failed" prefix."""
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


def is_no_domain(exc: BaseException) -> bool:
    return error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN


def is_not_running(exc: BaseException) -> bool:
    """"domain is not running" and the like: the request fits no longer."""
    return error_code(exc) == libvirt.VIR_ERR_OPERATION_INVALID


def is_flag_refused(exc: BaseException) -> bool:
    """The driver does not know a flag we passed (retry without it)."""
    return error_code(exc) in _FLAG_CODES and "flag" in error_message(exc).lower()


def is_unsupported(exc: BaseException) -> bool:
    """The driver cannot do this at all (e.g. the test driver and a restore XML)."""
    return error_code(exc) in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` says the connection is dead rather than the call bad."""
    if not isinstance(exc, libvirt.libvirtError):
        return False
    code = exc.get_error_code()
    if code in _DEAD_CODES:
        return True
    return code in _TRANSPORT_CODES and exc.get_error_domain() in _TRANSPORT_DOMAINS


def hypervisor_error(exc: BaseException, action: str = "") -> HypervisorError:
    """The host's failure, carrying libvirt's text and code (a start or restore
    that may be the job's fault is judged in start_errors)."""
    message = error_message(exc)
    return HostError(f"{action}: {message}" if action else message, error_code(exc))
