"""File permission checks made as the job user, not as root.

The C++ gahp checks disk images with ``access()`` as root, so a job can attach
any file of the host. vmgahp checks as the job's owner (``VMGAHP_USER_UID`` /
``VMGAHP_USER_GID``): every directory on the path must be searchable and the
file readable (or writable) by that user, from the mode bits. The check is
pure (no seteuid), so it is safe in worker threads. POSIX ACLs are not
consulted; without a job user (not root) plain ``os.access`` is used.
"""

from __future__ import annotations

import os
import stat

from vmgahp.protocol.env import read_gahp_environment


class JobUser:
    """The job's owner: uid, primary gid and (looked up once, when first
    asked for) its login name and groups."""

    __slots__ = ("uid", "gid", "_name", "_groups")

    def __init__(self, uid: int, gid: int) -> None:
        self.uid = uid
        self.gid = gid
        self._name: str | None = None  # "" when the passwd database does not know the uid
        self._groups: frozenset[int] | None = None

    def __repr__(self) -> str:
        return f"JobUser(uid={self.uid}, gid={self.gid})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobUser) and (self.uid, self.gid) == (other.uid, other.gid)

    def __hash__(self) -> int:
        return hash((self.uid, self.gid))

    def _passwd_name(self) -> str:
        if self._name is None:
            import pwd

            try:
                self._name = pwd.getpwuid(self.uid).pw_name
            except KeyError:
                self._name = ""
        return self._name

    @property
    def login(self) -> str:
        """The login name, or ``uid<N>`` for a uid without a passwd entry."""
        return self._passwd_name() or f"uid{self.uid}"

    @property
    def groups(self) -> frozenset[int]:
        if self._groups is None:
            name = self._passwd_name()
            try:
                self._groups = frozenset(os.getgrouplist(name, self.gid)) if name else frozenset({self.gid})
            except OSError:
                self._groups = frozenset({self.gid})
        return self._groups


def permits(st: os.stat_result, user: JobUser, want: int) -> bool:
    """``want`` is a combination of 4 (read), 2 (write), 1 (execute/search)."""
    if user.uid == 0:
        # root reads and writes anything; execute needs some x bit.
        return not (want & 1) or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == user.uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in user.groups:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def can_access(path: str, user: JobUser | None, write: bool = False, directory: bool = False) -> bool:
    """True if ``user`` may read (or read and write) the file at ``path``;
    with ``directory``, a directory it may list and enter is accepted too.

    The check is made on the file the path really names: symlinks and ``..``
    are resolved first (``os.path.realpath``), and every directory above the
    *resolved* file must be searchable by the user - a symlink in the working
    dir pointing into a private directory (say ``/root/disk.img``) is refused
    even when the file itself has permissive mode bits."""
    want = 6 if write else 4
    if user is None:
        if directory and os.path.isdir(path):
            return os.access(path, os.R_OK | os.X_OK)
        return os.access(path, os.R_OK | (os.W_OK if write else 0))
    real = os.path.realpath(path)
    try:
        if not ancestors_searchable(real, user):
            return False
        st = os.stat(real)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return directory and permits(st, user, 5)
    return permits(st, user, want)


def ancestors_searchable(path: str, user: JobUser) -> bool:
    """Every directory above ``path`` (already resolved) lets ``user`` through."""
    parent = os.path.dirname(path)
    while True:
        try:
            if not permits(os.stat(parent), user, 1):
                return False
        except OSError:
            return False
        up = os.path.dirname(parent)
        if up == parent:
            return True
        parent = up


def can_enter(path: str, user: JobUser) -> bool:
    """``user`` may enter the directory ``path``: it and every directory above
    it are searchable (symlinks and ``..`` resolved first, as :func:`can_access`)."""
    real = os.path.realpath(path)
    try:
        return permits(os.stat(real), user, 1) and ancestors_searchable(real, user)
    except OSError:
        return False


def job_user_from_env(environ: dict[str, str] | os._Environ[str]) -> JobUser | None:
    """VMGAHP_USER_UID/GID; unset, empty, non-numeric or <= 0 counts as unset."""
    env = read_gahp_environment(environ)
    return None if env.uid is None or env.gid is None else JobUser(env.uid, env.gid)
