"""Datastore files: HTTP transfers through /folder, folders through the FileManager.

Transfers use ``https://<server>/folder/<path>?dcPath=<datacenter>&dsName=<datastore>``
with the SOAP session's cookie, over the same pinned, deadline-bound connection class
as the SOAP calls (transport.py). Uploads are streamed from the file in 1 MiB blocks;
downloads go to a temporary file beside the target, are fsync'ed and renamed into
place, so a target is either complete or absent. A 401/403 (the cookie's session
expired) leads to one re-login and a second try. Paths here are relative to the
placement's datastore ("job-7/disk.vmdk"); ``Placement.ds_path`` makes "[ds] ..." ones.
"""

from __future__ import annotations

import http.client
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable
from urllib.parse import quote, urlencode

from vmgahp.drivers.vmware.errors import AlreadyExists, NotFound, VSphereError
from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.session import Session
from vmgahp.drivers.vmware.tasks import run_task
from vmgahp.drivers.vmware.transport import Deadline, connection_class, translate_transport

BLOCK = 1 << 20
Sink = Callable[[http.client.HTTPResponse, Callable[[], None]], Any]


@dataclass(frozen=True)
class DsFile:
    name: str
    size: int
    folder: bool = False


def folder_url(placement: Placement, path: str) -> str:
    """The /folder URL path (with query) of ``path`` on the placement's datastore."""
    query = urlencode({"dcPath": placement.dc_path, "dsName": placement.datastore_name}, quote_via=quote)
    return f"/folder/{quote(path.lstrip('/'), safe='/')}?{query}"


def _connect(session: Session) -> http.client.HTTPSConnection:
    return connection_class(session.trust.thumbprint)(session.host, session.port, context=session.trust.ssl_context())


def _exchange(session: Session, method: str, url: str, what: str, deadline: Deadline,
              source: BinaryIO | None, size: int, sink: Sink | None) -> tuple[int, Any]:  # fmt: skip
    """One HTTP request; returns (status, sink's result). Transport errors translated."""
    conn = _connect(session)
    try:
        with deadline.bound(what, session.io_timeout):
            conn.putrequest(method, url, skip_accept_encoding=True)
            conn.putheader("Cookie", session.cookie())
            if source is not None:
                conn.putheader("Content-Type", "application/octet-stream")
                conn.putheader("Content-Length", str(size))
            conn.endheaders()
            sock = conn.sock  # getresponse() may drop conn.sock; the response keeps reading it

            def next_block() -> None:  # each block under the time still left
                sock.settimeout(min(session.io_timeout, deadline.check(what)))

            if source is not None:
                while block := source.read(BLOCK):
                    next_block()
                    conn.send(block)
            response = conn.getresponse()
            if response.status == 200 and sink is not None:
                return response.status, sink(response, next_block)
            response.read(BLOCK)  # an error page: small
            return response.status, None
    except VSphereError:
        raise
    except Exception as exc:
        translated = translate_transport(exc, what, session.trust)
        if translated is None:
            raise
        raise translated from exc
    finally:
        conn.close()


def _with_relogin(session: Session, what: str, deadline: Deadline, attempt: Callable[[], tuple[int, Any]]) -> Any:
    for tries in (1, 2):
        generation = session.generation
        status, result = attempt()
        if status in (200, 201, 204):
            return result
        if status in (401, 403) and tries == 1:
            session.relogin(generation, deadline)
            continue
        if status == 404:
            raise NotFound(f"{what}: no such file (HTTP 404)")
        raise VSphereError(f"{what}: HTTP {status}")
    raise AssertionError("unreachable")


def upload(session: Session, placement: Placement, local: Path, remote: str, deadline: Deadline) -> int:
    """Copy local file ``local`` to ``remote`` (replacing it); returns the byte count."""
    local = Path(local)
    size = local.stat().st_size
    what = f"upload {local.name} to {placement.ds_path(remote)}"
    url = folder_url(placement, remote)

    def attempt() -> tuple[int, Any]:
        with open(local, "rb") as source:
            return _exchange(session, "PUT", url, what, deadline, source, size, None)

    _with_relogin(session, what, deadline, attempt)
    return size


def download(session: Session, placement: Placement, remote: str, local: Path, deadline: Deadline) -> int:
    """Copy ``remote`` to local file ``local``, atomically; returns the byte count."""
    local = Path(local)
    what = f"download {placement.ds_path(remote)}"
    url = folder_url(placement, remote)

    def sink(response: http.client.HTTPResponse, next_block: Callable[[], None]) -> int:
        expected = response.getheader("Content-Length")
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            done = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    next_block()
                    block = response.read(BLOCK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                out.flush()
                os.fsync(out.fileno())
            if expected is not None and int(expected) != done:
                raise VSphereError(f"{what}: got {done} of {expected} bytes")
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(local.parent)
        return done

    return _with_relogin(
        session, what, deadline, lambda: _exchange(session, "GET", url, what, deadline, None, 0, sink)
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(session: Session, placement: Placement, folder: str, deadline: Deadline) -> None:
    """Make ``folder`` (and missing parents); AlreadyExists if ``folder`` itself exists."""
    manager = session.content.fileManager
    parent = str(PurePosixPath(folder.strip("/")).parent)
    if parent != ".":
        try:
            session.invoke(f"make folder {parent}", deadline, manager.MakeDirectory, placement.ds_path(parent),
                           placement.datacenter, True)  # fmt: skip
        except AlreadyExists:
            pass
    session.invoke(f"make folder {placement.ds_path(folder)}", deadline, manager.MakeDirectory,
                   placement.ds_path(folder), placement.datacenter, False)  # fmt: skip


def delete(session: Session, placement: Placement, path: str, deadline: Deadline) -> None:
    """Delete a file or a folder with all it holds (DeleteDatastoreFile_Task)."""
    manager = session.content.fileManager
    run_task(session, f"delete {placement.ds_path(path)}", deadline, manager.DeleteDatastoreFile_Task,
             placement.ds_path(path), placement.datacenter)  # fmt: skip


def list_folder(session: Session, placement: Placement, folder: str, deadline: Deadline,
                pattern: str = "*") -> list[DsFile]:  # fmt: skip
    """The entries of ``folder`` matching ``pattern`` (SearchDatastore_Task)."""
    from pyVmomi import vim

    what = f"list {placement.ds_path(folder)}"
    browser = session.props(placement.datastore, ["browser"], deadline, what)["browser"]
    browse = vim.host.DatastoreBrowser
    # A matchPattern is required: govmomi 0.24's simulator crashes on a spec without one.
    spec = browse.SearchSpec(matchPattern=[pattern],
                             details=browse.FileInfo.Details(fileType=True, fileSize=True, modification=False,
                                                             fileOwner=False))  # fmt: skip
    result = run_task(session, what, deadline, browser.SearchDatastore_Task, placement.ds_path(folder), spec)
    files = [DsFile(f.path, int(f.fileSize or 0), isinstance(f, browse.FolderInfo)) for f in result.file or []]
    return sorted(files, key=lambda f: f.name)
