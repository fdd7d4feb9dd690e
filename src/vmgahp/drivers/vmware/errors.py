"""Errors of the vSphere layer, and the secret that must never reach one.

Every failure leaves this package as a ``VSphereError`` with a readable message:
pyVmomi faults, socket errors and HTTP statuses are translated where they happen
(session.py, transport.py). Messages name hosts, users, objects and fault types,
never the password: ``Secret`` hides it from repr/str, and ``scrub`` removes it from
any text that came from elsewhere (a server's fault message could echo anything).
"""

from __future__ import annotations


class VSphereError(Exception):
    """A vSphere operation failed. ``fault`` is the vSphere fault type, if any."""

    def __init__(self, message: str, fault: str | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class LoginRefused(VSphereError):
    """The server refused the user name or password."""


class UntrustedServer(VSphereError):
    """The server's TLS certificate is not trusted (CA, host name or pinned thumbprint)."""


class Unreachable(VSphereError):
    """No answer: connection refused or reset, the server went away mid-call."""


class TimedOut(VSphereError):
    """The caller's deadline passed before the operation finished; it may still finish."""


class NotFound(VSphereError):
    """A named object, file or managed object does not exist (or no longer)."""


class Ambiguous(VSphereError):
    """A name (or no name) matches several objects; ``choices`` lists them."""

    def __init__(self, message: str, choices: list[str]) -> None:
        super().__init__(message)
        self.choices = choices


class InvalidState(VSphereError):
    """The object is in the wrong state for the operation (e.g. powering on a running VM)."""


class AlreadyExists(VSphereError):
    """A file, folder or VM registration that was to be made exists already."""


class Secret:
    """A password held without showing it: repr and str give ``<secret>``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a password must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickled into a worker or a file
        raise TypeError("a Secret cannot be pickled")


def scrub(text: str, *secrets: Secret | None) -> str:
    """``text`` with every secret's value (raw and XML-escaped) replaced."""
    for secret in secrets:
        if secret is None:
            continue
        value = secret.reveal()
        escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        for form in {value, escaped}:
            text = text.replace(form, "***")
    return text
