"""One logged-in vSphere session: connect, call under a deadline, log in again.

``Session.connect`` asks the server which API versions it speaks
(``/sdk/vimServiceVersions.xml``, through the same pinned, deadline-bound connection
as everything else - pyVim's SmartStubAdapter probe has no timeout and bypasses the
pin), builds pyVmomi's ``SoapStubAdapter`` with an explicit SSL context (without one,
pyVmomi turns verification off for 127.0.0.1/localhost) and logs in.

``invoke`` runs one SOAP call under the caller's deadline and translates what can go
wrong (errors.py). When the session expired (``NotAuthenticated``) it logs in again
and repeats the call - the server refused it unexecuted, so this is safe. Objects
that live in a session (property collectors, filters, container views) die with it:
code holding some runs inside ``with_session_objects``, which makes them anew.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any, Callable, Sequence, TypeVar

from vmgahp import log
from vmgahp.drivers.vmware.errors import (
    AlreadyExists,
    InvalidState,
    LoginRefused,
    NotFound,
    Secret,
    Unreachable,
    VSphereError,
    scrub,
)
from vmgahp.drivers.vmware.transport import IO_TIMEOUT, Deadline, Trust, connection_class, translate_transport

T = TypeVar("T")
_DETAIL_FIELDS = ("name", "file", "existingState", "invalidProperty", "property", "datastore")


class SessionExpired(VSphereError):
    """Internal: a per-session object's call found the session gone."""


class Session:
    def __init__(self, host: str, user: str, password: Secret, *, port: int = 443,
                 trust: Trust | None = None, io_timeout: float = IO_TIMEOUT) -> None:  # fmt: skip
        if not isinstance(password, Secret):
            raise TypeError("password must be a Secret (read it from its file with Secret(...))")
        self.host, self.port, self.user = host, port, user
        self.trust = trust or Trust()
        self.io_timeout = io_timeout
        self._password = password
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every successful login
        self._stub: Any = None
        self.content: Any = None  # vim.ServiceInstanceContent
        self.api_version = ""
        self.session_key = ""
        self.logins = 0
        self.open_collectors: set[str] = set()  # private property collectors not yet destroyed
        self.collectors_made = 0

    def __repr__(self) -> str:
        return f"<vSphere session {self.user}@{self.host}:{self.port}>"

    @classmethod
    def connect(cls, host: str, user: str, password: Secret, *, port: int = 443, ca_file: str | None = None,
                thumbprint: str | None = None, timeout: float = 60.0) -> "Session":  # fmt: skip
        session = cls(host, user, password, port=port, trust=Trust(ca_file=ca_file, thumbprint=thumbprint))
        session.open(Deadline(timeout))
        return session

    # ------------------------------------------------------------ connecting

    def open(self, deadline: Deadline) -> None:
        from pyVmomi import SoapStubAdapter, vim

        version = self._probe_version(deadline)
        stub = SoapStubAdapter(host=self.host, port=self.port, version=version,
                               sslContext=self.trust.ssl_context(), httpConnectionTimeout=self.io_timeout)  # fmt: skip
        # Every SOAP connection through the pinned, deadline-aware class (transport.py).
        stub.scheme = connection_class(self.trust.thumbprint)
        self._stub, self.api_version = stub, version
        instance = vim.ServiceInstance("ServiceInstance", stub)
        self.content = self.invoke("RetrieveServiceContent", deadline, instance.RetrieveContent)
        self._login(deadline)

    def _probe_version(self, deadline: Deadline) -> str:
        from pyVmomi import VmomiSupport

        what = f"vSphere API version of {self.host}:{self.port}"
        body = b""
        failure: VSphereError | None = None
        conn = connection_class(self.trust.thumbprint)(self.host, self.port, context=self.trust.ssl_context())
        try:
            with deadline.bound(what, self.io_timeout):
                conn.request("GET", "/sdk/vimServiceVersions.xml")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failure = Unreachable(f"{what}: HTTP {response.status} (not a vSphere server?)")
        except Exception as exc:  # translated below; anything else is a bug
            failure = translate_transport(exc, what, self.trust)
            if failure is None:
                raise
        finally:
            conn.close()
        if failure is not None:
            raise failure
        offered: set[str] = set()
        try:
            for namespace in ET.fromstring(body).iter("namespace"):
                if namespace.findtext("name") == "urn:vim25":
                    offered.add(namespace.findtext("version") or "")
                    offered.update(v.text or "" for v in namespace.iterfind("priorVersions/version"))
        except ET.ParseError as exc:
            raise VSphereError(f"{what}: unreadable vimServiceVersions.xml ({exc})") from None
        for version in VmomiSupport.GetServiceVersions("vim25"):  # newest first
            if VmomiSupport.versionIdMap.get(version) in offered:
                return version
        raise VSphereError(f"{what}: no API version in common (server offers {sorted(offered)})")

    def _login(self, deadline: Deadline) -> None:
        from pyVmomi import vim

        what = f"login to {self.host}:{self.port} as {self.user!r}"
        failure: VSphereError | None = None
        try:
            with deadline.bound(what, self.io_timeout):
                user_session = self.content.sessionManager.Login(self.user, self._password.reveal(), None)
        except vim.fault.InvalidLogin:
            failure = LoginRefused(f"{what}: user name or password refused", fault="InvalidLogin")
        except Exception as exc:
            failure = self.translate(exc, what) or VSphereError(f"{what}: {type(exc).__name__}")
        if failure is not None:
            # Raised outside the except block: no __context__ holding pyVmomi's frames,
            # whose locals include the serialized request with the password in it.
            raise failure
        self.session_key = user_session.key
        self.logins += 1
        self._generation += 1
        log.get().info("vsphere_login", host=self.host, user=self.user, api=self.api_version, logins=self.logins)

    def relogin(self, seen_generation: int, deadline: Deadline) -> None:
        """Log in again unless another thread did since ``seen_generation``."""
        with self._lock:
            if self._generation == seen_generation:
                log.get().info("vsphere_session_expired", host=self.host, user=self.user)
                self._login(deadline)

    def close(self) -> None:
        if self._stub is None:
            return
        try:
            self.invoke("logout", Deadline(5.0), self.content.sessionManager.Logout, retry=False)
        except VSphereError:
            pass  # the session ends with the server's idle timeout anyway
        finally:
            self._stub.DropConnections()
            self._stub = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ calling

    def invoke(self, what: str, deadline: Deadline, fn: Callable[..., T], *args: Any,
               per_session: bool = False, retry: bool = True, **kwargs: Any) -> T:  # fmt: skip
        """``fn(*args, **kwargs)`` under ``deadline``; errors as VSphereError.

        ``per_session``: ``fn`` uses a per-session object, so an expired session
        raises SessionExpired for ``with_session_objects`` instead of a retry.
        """
        from pyVmomi import vim

        for attempt in (1, 2):
            generation = self._generation
            try:
                with deadline.bound(what, self.io_timeout):
                    return fn(*args, **kwargs)
            except vim.fault.NotAuthenticated:
                if per_session:
                    raise SessionExpired(f"{what}: session expired") from None
                if not retry or attempt == 2:
                    raise VSphereError(f"{what}: not authenticated", fault="NotAuthenticated") from None
            except Exception as exc:
                translated = self.translate(exc, what)
                if translated is None:
                    raise
                raise translated from exc
            self.relogin(generation, deadline)
        raise AssertionError("unreachable")

    def with_session_objects(self, what: str, deadline: Deadline, body: Callable[[], T]) -> T:
        """Run ``body`` (which makes and uses per-session objects); again after a re-login."""
        for _ in range(3):
            generation = self._generation
            try:
                return body()
            except SessionExpired:
                self.relogin(generation, deadline)
        raise VSphereError(f"{what}: the session kept expiring", fault="NotAuthenticated")

    def translate(self, exc: BaseException, what: str) -> VSphereError | None:
        from pyVmomi import vmodl

        if isinstance(exc, VSphereError):
            return exc
        if isinstance(exc, vmodl.MethodFault):
            return fault_error(exc, what, self._password)
        return translate_transport(exc, what, self.trust)

    # ------------------------------------------------------------ reading

    def retrieve(self, what: str, deadline: Deadline, obj_specs: Sequence[Any], prop_specs: Sequence[Any],
                 per_session: bool = False) -> list[tuple[Any, dict[str, Any]]]:  # fmt: skip
        """RetrievePropertiesEx (and its continuations): [(object, {path: value})]."""
        from pyVmomi import vmodl

        pc = self.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(objectSet=list(obj_specs), propSet=list(prop_specs))
        options = vmodl.query.PropertyCollector.RetrieveOptions()

        def call(method: Callable[..., Any], *args: Any) -> Any:
            result = method(*args)
            _raise_unauthenticated(result)
            return result

        result = self.invoke(what, deadline, call, pc.RetrievePropertiesEx, [spec], options, per_session=per_session)
        found: list[tuple[Any, dict[str, Any]]] = []
        while result is not None:
            for item in result.objects or []:
                found.append((item.obj, {p.name: p.val for p in item.propSet or []}))
            if not result.token:
                break
            result = self.invoke(what, deadline, call, pc.ContinueRetrievePropertiesEx, result.token,
                                 per_session=per_session)  # fmt: skip
        return found

    def props(self, obj: Any, paths: Sequence[str], deadline: Deadline, what: str = "") -> dict[str, Any]:
        """Properties ``paths`` of one managed object (unset ones are absent)."""
        from pyVmomi import vmodl

        pcls = vmodl.query.PropertyCollector
        spec = pcls.PropertySpec(type=type(obj), pathSet=list(paths))
        found = self.retrieve(what or f"read {obj._moId}", deadline, [pcls.ObjectSpec(obj=obj)], [spec])
        if not found:
            raise NotFound(f"{what or 'read'}: {obj._moId} does not exist")
        return found[0][1]

    def cookie(self) -> str:
        """The session cookie ("name=value") for the /folder HTTP interface."""
        raw = getattr(self._stub, "cookie", "") or ""
        return raw.split(";", 1)[0].strip()

    @property
    def generation(self) -> int:
        return self._generation


def _raise_unauthenticated(result: Any) -> None:
    """An expired session's read can come back as properties "missing" with
    NotAuthenticated (vcsim does this) rather than as a fault of the call:
    raise it, so that ``invoke`` logs in again and repeats the read."""
    from pyVmomi import vim

    for item in getattr(result, "objects", None) or []:
        for missing in item.missingSet or []:
            if isinstance(missing.fault, vim.fault.NotAuthenticated):
                raise missing.fault


def fault_error(fault: Any, what: str, secret: Secret | None = None) -> VSphereError:
    """A pyVmomi fault (raised, or a task's ``info.error``) as a VSphereError."""
    from pyVmomi import vim, vmodl

    name = getattr(fault, "_wsdlName", type(fault).__name__)
    details = [f"{f}={getattr(fault, f)}" for f in _DETAIL_FIELDS if isinstance(getattr(fault, f, None), str)]
    message = getattr(fault, "msg", "") or ""
    text = scrub(f"{what}: {name}" + (f" ({', '.join(details)})" if details else "")
                 + (f": {message}" if message and message != name else ""), secret)  # fmt: skip
    if isinstance(fault, vim.fault.InvalidLogin):
        return LoginRefused(text, fault=name)
    if isinstance(fault, (vmodl.fault.ManagedObjectNotFound, vim.fault.NotFound, vim.fault.FileNotFound)):
        return NotFound(text, fault=name)
    if isinstance(fault, (vim.fault.InvalidPowerState, vim.fault.InvalidState)):
        return InvalidState(text, fault=name)
    if isinstance(fault, (vim.fault.AlreadyExists, vim.fault.FileAlreadyExists, vim.fault.DuplicateName)):
        return AlreadyExists(text, fault=name)
    return VSphereError(text, fault=name)
