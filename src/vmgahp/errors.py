"""vmgahp's exceptions share one base, :class:`VmgahpError`.

* ``GahpError`` is a failed VM operation; it becomes ``<id> 1 <token>``. Its
  ``detail`` is for the log only, never for the wire. The tokens and what they
  mean are :mod:`vmgahp.protocol.tokens`.
* Below the VM layer, drivers raise :class:`vmgahp.drivers.base.HypervisorError`
  and its kinds; one place (:mod:`vmgahp.vm.failures`) turns them into tokens.
* Configuration, start-up, usage and submit-file errors are ``VmgahpError``s
  too, each where it is raised.
"""

from __future__ import annotations


class VmgahpError(Exception):
    """Every error vmgahp raises on purpose."""


class GahpError(VmgahpError):
    """A VM operation failed with a wire token and a log-only detail."""

    def __init__(self, token: str, detail: str = "") -> None:
        super().__init__(f"{token}: {detail}" if detail else token)
        self.token = token
        self.detail = detail or token
