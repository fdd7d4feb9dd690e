"""One job user (vmgahp.job.access.JobUser) for the gahp and ``vmgahp run``:
its login name, the one permission walk, and handing files to it."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from vmgahp.job.access import JobUser, can_enter
from vmgahp.job.workdir import give_tree_to

UNKNOWN_UID = 4_000_123  # no passwd entry on a test machine


def _no_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


def test_login_is_the_passwd_name() -> None:
    assert JobUser(0, 0).login == pwd.getpwuid(0).pw_name


@pytest.mark.skipif(not _no_entry(UNKNOWN_UID), reason="the uid has a passwd entry here")
def test_a_uid_without_a_passwd_entry() -> None:
    user = JobUser(UNKNOWN_UID, UNKNOWN_UID)
    assert user.login == f"uid{UNKNOWN_UID}"
    assert user.groups == frozenset({UNKNOWN_UID})


def test_login_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = pwd.getpwuid

    def counting(uid: int):
        calls.append(uid)
        return real(uid)

    monkeypatch.setattr(pwd, "getpwuid", counting)
    user = JobUser(0, 0)
    assert calls == []  # nothing at construction
    for _ in range(3):
        assert user.login and user.groups
    assert calls == [0]


def test_can_enter(tmp_path: Path) -> None:
    other = JobUser(UNKNOWN_UID, UNKNOWN_UID)
    os.chmod(tmp_path, 0o755)
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    assert can_enter(str(inner), other) == all(
        os.stat(p).st_mode & 0o001 for p in [inner, *inner.parents])  # the machine's own /tmp may be private
    os.chmod(tmp_path / "a", 0o700)
    assert not can_enter(str(inner), other)
    assert not can_enter(str(tmp_path / "a"), other)  # the directory itself counts
    assert can_enter(str(inner), JobUser(0, 0))  # root passes any directory
    link = tmp_path / "link"
    link.symlink_to(inner)
    assert not can_enter(str(link), other)  # resolved first: the private directory is on the way
    assert not can_enter(str(tmp_path / "missing"), other)


def test_give_tree_to(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f").write_text("x")
    (top / "link").symlink_to("/etc/hostname")
    before = os.stat("/etc/hostname").st_uid
    give_tree_to(top, None, None)  # no user: nothing
    give_tree_to(top, 4321, 4322)
    want = (4321, 4322) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    for path in (top, top / "sub", top / "sub" / "f"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == want
    assert (top / "link").lstat().st_uid == want[0]
    assert os.stat("/etc/hostname").st_uid == before  # a symlink's target is not touched
