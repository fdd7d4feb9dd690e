"""A private libvirtd that tests may SIGKILL, SIGSTOP and restart.

The shared system libvirtd serves every other test (and other sessions on the
machine): killing or stopping it would break them. This fixture runs a libvirtd
of its own in a new mount namespace, where fresh tmpfs mounts cover
``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt`` and
``/var/log/libvirt``, so its socket, pid file, domain status files and QEMU
monitor sockets are its own. ``/etc/libvirt`` (the test rig's qemu.conf from
scripts/setup.sh) and ``/tmp`` (the tests' disks) are shared.

* An *anchor* process - ``unshare -m --propagation private`` running a small
  shell script that makes the mounts and then sleeps - holds the namespace.
  Should the test process die without its teardown, the anchor notices and
  kills what runs in the namespace.
* libvirtd runs in it: ``nsenter --mount=/proc/<anchor>/ns/mnt libvirtd -p
  /run/libvirt/libvirtd.pid`` (nsenter execs it: the child's pid is
  libvirtd's). A restart after a SIGKILL is the same command; libvirtd then
  re-attaches to the QEMU processes that outlived it (their status files and
  monitor sockets are still in the namespace's tmpfs).
* From outside the socket is ``/proc/<anchor>/root/run/libvirt/libvirt-sock``,
  the URI ``qemu+unix:///system?socket=<that path>``.

**Stock settings** (``PrivateLibvirtd(workdir, stock=True)``, the
``stock_libvirtd`` fixture): a tmpfs also covers ``/etc/libvirt`` in the
namespace, holding only ``qemu.conf`` as Debian 12's libvirt-daemon-system
ships it - every line a comment, so every setting is libvirt's compiled-in
default: QEMU runs as ``libvirt-qemu:libvirt-qemu``, ``dynamic_ownership = 1``,
``remember_owner = 1``, the DAC security driver (AppArmor too where it is
active), ``stdio_handler = "logd"``. The last needs virtlogd, which the
package's init files would start: it is started here in the namespace too
(``virtlogd -p /run/libvirt/virtlogd.pid``; its socket, in the private
``/run/libvirt``, is what this libvirtd finds), before libvirtd and killed by
its pid after it. No setting is added to make anything pass. And ``/dev`` is
a copy with ``/dev/kvm`` as Debian's udev makes it, ``root:kvm 0660``
(libvirt-qemu is in ``kvm``): this machine has no udev and the node is
``root:root 0600``. The QEMU that probes capabilities keeps
CAP_DAC_OVERRIDE and finds KVM, but libvirt then checks /dev/kvm as
libvirt-qemu, finds it unusable and throws its capability cache away before
every start and restore ("KVM was enabled when probing
'/usr/bin/qemu-system-x86_64', but it is not available now"): a full probe,
8 s idle and ~50 s on a loaded machine, in each START. The guests run under
TCG (``VM_KVM_DOMAIN_TYPE = qemu``) either way.

The QEMU capabilities cache of the shared daemon is copied in first, so the
private daemon does not probe QEMU again (~8 s here).

Teardown destroys the domains left on the private daemon, then kills by pid:
libvirtd, every QEMU left in the namespace (a libvirtd SIGKILLed for good
leaves them), and the anchor. Tests are skipped, with the reason, when the
process is not root or ``unshare``/``nsenter``/``libvirtd`` are missing; a
daemon that is installed but does not come up is an error.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

__all__ = ["PrivateLibvirtd", "_private_libvirtd_session", "private_libvirtd", "stock_libvirtd"]

T = TypeVar("T")

PRIVATE_DIRS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
START_TIMEOUT = 60.0  # socket up and the first call answered (a cold capability probe is ~8 s)
CALL_TIMEOUT = 30.0  # one call of the helpers; libvirtd must not be SIGSTOPped then

# Debian 12's /etc/libvirt/qemu.conf (libvirt-daemon-system 9.0.0) has no
# active line: 36 KB of comments. This is the same configuration, said short.
STOCK_QEMU_CONF = """\
# /etc/libvirt/qemu.conf of a stock Debian 12 libvirt (libvirt-daemon-system
# 9.0.0): every setting at libvirt's compiled-in default, as the package
# ships it (there every line is a comment). In effect:
#   user = "libvirt-qemu"    group = "libvirt-qemu"
#   dynamic_ownership = 1    remember_owner = 1
#   security_driver: dac (and apparmor where AppArmor is active)
#   stdio_handler = "logd"   (virtlogd)
"""

ANCHOR_SCRIPT = r"""
set -e
stage="$1"
etc="$2"
# The shared daemon's QEMU capabilities, copied before the tmpfs hides them.
if [ -d /var/cache/libvirt/qemu ]; then cp -a /var/cache/libvirt/qemu "$stage/qemu-cache" || true; fi
for dir in {dirs}; do
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
done
if [ -d "$stage/qemu-cache" ]; then cp -a "$stage/qemu-cache" /var/cache/libvirt/qemu || true; fi
if [ -n "$etc" ]; then
    # A configuration of its own: only what is in $etc (the stock qemu.conf).
    mkdir -p /etc/libvirt
    mount -t tmpfs -o mode=0755 tmpfs /etc/libvirt
    cp -a "$etc"/. /etc/libvirt/
fi
if [ -n "$etc" ] && [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    # /dev as a stock Debian host has it: /dev/kvm root:kvm 0660, as udev
    # makes it (see the module docstring). A copy of /dev on a tmpfs, with the mounts
    # below it bound in again, moved over /dev: a file bound over /dev/kvm
    # alone would break libvirt, which moves every mount under /dev into the
    # namespace it makes for QEMU ("Unable to move /dev/kvm mount to ...").
    mount -t tmpfs -o mode=0755 tmpfs "$stage/dev"
    for entry in /dev/* /dev/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        if mountpoint -q "$entry"; then mkdir -p "$stage$entry"; mount --bind "$entry" "$stage$entry"
        else cp -a "$entry" "$stage/dev/"; fi
    done
    chgrp kvm "$stage/dev/kvm"
    chmod 0660 "$stage/dev/kvm"
    # The old /dev goes first (in this namespace only): mounts left under
    # the new one would still be listed in /proc/mounts, and libvirt would
    # try to move them too ("Unable to move /dev/pts mount ...: Invalid argument").
    umount -l /dev
    mount --move "$stage/dev" /dev
fi
echo ready
# Held until the test process is gone. If it dies without its teardown, this
# watchdog kills what runs in the namespace (libvirtd, QEMUs; only ours live here).
while kill -0 "$PPID" 2>/dev/null; do sleep 1; done
me=$(readlink /proc/$$/ns/mnt)
for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" != $$ ] && [ "$(readlink "$proc/ns/mnt" 2>/dev/null)" = "$me" ] && kill -9 "$pid" 2>/dev/null
done
exit 0
""".replace("{dirs}", " ".join(PRIVATE_DIRS))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run a blocking libvirt call in a thread; a stopped daemon must not hang the test."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="private-libvirtd-call")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what}: no answer from the private libvirtd within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class PrivateLibvirtd:
    """One private libvirtd in its own mount namespace; see the module docstring."""

    def __init__(self, workdir: Path, stock: bool = False) -> None:
        self.workdir = workdir
        self.stock = stock  # Debian's own qemu.conf (QEMU as libvirt-qemu, DAC) and virtlogd
        self.log_path = workdir / "libvirtd.log"
        self.anchor: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.virtlogd: subprocess.Popen | None = None
        self.stopped = False
        self.starts = 0

    # ------------------------------------------------------------ addresses
    @property
    def anchor_pid(self) -> int:
        assert self.anchor is not None
        return self.anchor.pid

    @property
    def pid(self) -> int | None:
        """libvirtd's pid (None when it is not running)."""
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        return self.daemon.pid

    @property
    def socket(self) -> str:
        return f"/proc/{self.anchor_pid}/root/run/libvirt/libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def path(self, inside: str) -> Path:
        """A path of the namespace (``/var/log/libvirt/qemu/<name>.log``) seen from outside."""
        return Path(f"/proc/{self.anchor_pid}/root{inside}")

    # ------------------------------------------------------------- lifecycle
    def open_namespace(self) -> None:
        stage = Path(tempfile.mkdtemp(prefix="stage-", dir=self.workdir))
        etc = ""
        if self.stock:
            etc_dir = stage / "etc"
            etc_dir.mkdir()
            (etc_dir / "qemu.conf").write_text(STOCK_QEMU_CONF)
            etc = str(etc_dir)
            (stage / "dev").mkdir()
        self.anchor = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", ANCHOR_SCRIPT, "anchor", str(stage), etc],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        line = self.anchor.stdout.readline().decode().strip()  # type: ignore[union-attr]
        if line != "ready":
            self.anchor.wait(timeout=10)
            error = self.anchor.stderr.read().decode().strip()  # type: ignore[union-attr]
            pytest.fail(f"cannot make the private mount namespace: {error or line!r}")
        shutil.rmtree(stage, ignore_errors=True)
        if self.stock:
            self._start_virtlogd()

    def _start_virtlogd(self) -> None:
        """virtlogd in the namespace, as the distribution's init files start it."""
        with open(self.workdir / "virtlogd.stderr", "ab") as stderr:
            self.virtlogd = subprocess.Popen(
                ["nsenter", f"--mount=/proc/{self.anchor_pid}/ns/mnt", "virtlogd", "-p", "/run/libvirt/virtlogd.pid"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )
        sock = self.path("/run/libvirt/virtlogd-sock")
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.exists():
            if self.virtlogd.poll() is not None:
                pytest.fail(f"virtlogd exited with {self.virtlogd.returncode}; see {self.workdir / 'virtlogd.stderr'}")
            if time.monotonic() > deadline:
                pytest.fail(f"virtlogd made no socket within {START_TIMEOUT:g} s")
            time.sleep(0.05)

    def start(self) -> None:
        """Start libvirtd in the namespace (also after a SIGKILL) and wait until it answers."""
        assert self.anchor is not None and self.anchor.poll() is None, "the anchor is gone"
        if self.pid is not None:
            return
        env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{self.log_path}")
        with open(self.workdir / "libvirtd.stderr", "ab") as stderr:
            self.daemon = subprocess.Popen(
                ["nsenter", f"--mount=/proc/{self.anchor_pid}/ns/mnt", "libvirtd", "-p", "/run/libvirt/libvirtd.pid"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True,
            )
        self.stopped = False
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                pytest.fail(f"the private libvirtd exited with {self.daemon.returncode}; see {self.log_path}")
            if os.path.exists(self.socket):
                try:
                    _with_timeout(self._version, max(1.0, deadline - time.monotonic()), "first call")
                    return
                except Exception as exc:  # not listening yet, or probing QEMU
                    error = exc
            time.sleep(0.1)
        pytest.fail(f"the private libvirtd did not answer within {START_TIMEOUT:g} s ({error}); see {self.log_path}")

    def _version(self) -> int:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            return conn.getLibVersion()
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL libvirtd (by its pid); QEMU processes live on."""
        if self.daemon is None or self.daemon.poll() is not None:
            return
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(timeout=30)
        self.stopped = False

    def stop(self) -> None:
        """SIGSTOP libvirtd: it accepts connections and answers nothing."""
        assert self.pid is not None, "libvirtd is not running"
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def restart(self) -> None:
        """SIGKILL (if still running) and start again."""
        self.kill()
        self.start()

    def ensure_running(self) -> None:
        if self.stopped:
            self.cont()
        if self.pid is None:
            self.start()

    # --------------------------------------------------------------- queries
    def domains(self, timeout: float = CALL_TIMEOUT) -> list[str]:
        """Names of the running domains, through a fresh connection."""
        import libvirt

        def names() -> list[str]:
            conn = libvirt.open(self.uri)
            try:
                return sorted(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            finally:
                conn.close()

        return _with_timeout(names, timeout, "list of domains")

    def wait_for_no_domains(self, timeout: float) -> list[str]:
        """Poll until no domain runs, for at most ``timeout`` seconds; the names left."""
        deadline = time.monotonic() + timeout
        left = self.domains()
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = self.domains()
        return left

    def destroy_all(self) -> list[str]:
        """Destroy every domain on the private daemon; the names that were there."""
        import libvirt

        def destroy() -> list[str]:
            conn = libvirt.open(self.uri)
            try:
                names = []
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    names.append(dom.name())
                    try:
                        dom.destroy()
                    except libvirt.libvirtError:
                        pass  # gone meanwhile
                return names
            finally:
                conn.close()

        return _with_timeout(destroy, CALL_TIMEOUT, "destroy of leftover domains")

    def namespace_pids(self) -> list[int]:
        """Processes in the private namespace other than the anchor and libvirtd (QEMU)."""
        if self.anchor is None:
            return []
        try:
            ns = os.readlink(f"/proc/{self.anchor_pid}/ns/mnt")
        except OSError:
            return []
        own = {self.anchor_pid, self.pid, self.virtlogd.pid if self.virtlogd is not None else None}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in own:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") != ns or not _alive(int(entry)):
                    continue
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid != self.anchor_pid:  # not the anchor's own ``sleep 1``
                found.append(int(entry))
        return found

    def close(self) -> None:
        """Destroy leftovers, then kill libvirtd, stray QEMUs and the anchor, each by pid."""
        try:
            if self.pid is not None:
                self.cont()
                try:
                    self.destroy_all()
                except Exception:
                    pass  # QEMUs are killed by pid below
            self.kill()
            if self.virtlogd is not None and self.virtlogd.poll() is None:
                os.kill(self.virtlogd.pid, signal.SIGKILL)
                self.virtlogd.wait(timeout=10)
            for pid in self.namespace_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if self.anchor is not None:
                if self.anchor.poll() is None:
                    os.kill(self.anchor.pid, signal.SIGKILL)
                    self.anchor.wait(timeout=10)
                for stream in (self.anchor.stdout, self.anchor.stderr):
                    if stream is not None:
                        stream.close()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a private libvirtd needs root (mount namespaces, QEMU as root)"
    for tool in ("unshare", "nsenter", "libvirtd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/setup.sh)"
    try:
        import libvirt  # noqa: F401 - only: is libvirt-python importable
    except ImportError:
        return "libvirt-python is not installed"
    return None


@pytest.fixture(scope="session")
def _private_libvirtd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    daemon = PrivateLibvirtd(tmp_path_factory.mktemp("private-libvirtd"))
    try:
        daemon.open_namespace()
        daemon.start()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def private_libvirtd(_private_libvirtd_session: PrivateLibvirtd) -> Iterator[PrivateLibvirtd]:
    """The private libvirtd, running and answering; leftover domains destroyed after the test."""
    daemon = _private_libvirtd_session
    daemon.ensure_running()
    yield daemon
    daemon.ensure_running()
    daemon.destroy_all()


@pytest.fixture(scope="session")
def stock_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    """A private libvirtd with Debian's stock qemu.conf and its own virtlogd (see the module docstring)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("virtlogd") is None:
        pytest.skip("virtlogd is not installed (it comes with libvirt-daemon)")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        pytest.skip("there is no libvirt-qemu user (run scripts/setup.sh)")
    daemon = PrivateLibvirtd(tmp_path_factory.mktemp("stock-libvirtd"), stock=True)
    try:
        daemon.open_namespace()
        daemon.start()
        yield daemon
    finally:
        daemon.close()
