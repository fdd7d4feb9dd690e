"""The one place where a driver's failure becomes a wire token.

Drivers report *whose* fault a failure is (:class:`JobImageError`: the job's
image, description or saved state; :class:`HostError`: the host's); which
token that is depends on the command it failed in (spec 3.13, 6.3). A
``GahpError`` already carries its token (a job-ad check, a state rule).
"""

from __future__ import annotations

from vmgahp.drivers.base import HypervisorError, JobImageError
from vmgahp.errors import GahpError
from vmgahp.protocol import tokens

# Where a driver failure that is not the job's fault lands, by command.
_HOST_FAULT = {
    "CONDOR_VM_CHECKPOINT": tokens.VM_CANNOT_CREATE_CKPT_FILES,
}


def token_for(command: str, exc: BaseException) -> str:
    if isinstance(exc, GahpError):
        return exc.token
    if isinstance(exc, JobImageError) and command in ("CONDOR_VM_START", "restore"):
        return tokens.BAD_IMAGE  # the starter holds the job: its image or checkpoint is at fault
    if isinstance(exc, HypervisorError):
        return _HOST_FAULT.get(command, tokens.INTERNAL)
    return tokens.INTERNAL


def as_gahp_error(command: str, exc: BaseException, action: str) -> GahpError:
    """``exc`` (a driver failure) as the GahpError the runtime reports."""
    detail = getattr(exc, "message", None) or str(exc)
    return GahpError(token_for(command, exc), f"{action} failed: {detail}")
