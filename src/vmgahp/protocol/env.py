"""The environment condor_starter gives the gahp (spec 1.3), written and read.

The starter sets four variables of its own on top of what it passes through
(``vm_gahp_server.cpp:290-340``); the gahp reads them back at start-up
(``vmgahp_main.cpp``): the VM type and working directory in server mode, the
job user's ids whenever it runs as root.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

VMTYPE = "VMGAHP_VMTYPE"
WORKING_DIR = "VMGAHP_WORKING_DIR"
USER_UID = "VMGAHP_USER_UID"
USER_GID = "VMGAHP_USER_GID"
NAMES = (VMTYPE, WORKING_DIR, USER_UID, USER_GID)
INT_MAX = 0x7FFFFFFF


class GahpEnvironment(NamedTuple):
    vm_type: str  # lower-cased; "" when unset
    working_dir: str  # "" when unset
    uid: Optional[int]  # the job user; None when unset
    gid: Optional[int]  # None exactly when uid is None


def gahp_environment(vm_type: str, working_dir: str, uid: int = 0, gid: int = 0) -> dict[str, str]:
    """The gahp-specific variables the starter sets: the ids only for a uid
    > 0, a gid <= 0 replaced by the uid."""
    env = {VMTYPE: vm_type.lower(), WORKING_DIR: str(working_dir)}
    if uid > 0:
        env[USER_UID] = str(uid)
        env[USER_GID] = str(gid if gid > 0 else uid)
    return env


def _positive(text: str | None) -> int | None:
    text = (text or "").strip()
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    if not digits or len(digits) > 10:
        return None
    value = int(digits)
    return value if value <= INT_MAX else None  # atoi() returns a C int: beyond it is no uid


def read_gahp_environment(environ: Mapping[str, str]) -> GahpEnvironment:
    """What the gahp reads back. A uid that is unset, empty, non-numeric or
    <= 0 counts as unset; so does such a gid, which then is the uid."""
    uid = _positive(environ.get(USER_UID))
    gid = None if uid is None else (_positive(environ.get(USER_GID)) or uid)
    return GahpEnvironment(
        vm_type=environ.get(VMTYPE, "").strip().lower(),
        working_dir=environ.get(WORKING_DIR, ""),
        uid=uid,
        gid=gid,
    )
