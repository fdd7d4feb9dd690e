"""Logging in, TLS trust and the password's secrecy, against vcsim."""

from __future__ import annotations

import logging
import socket
import time
import traceback

import pytest
from vsphere_rig import POOL

from vmgahp import log
from vmgahp.drivers.vmware.errors import LoginRefused, Secret, Unreachable, UntrustedServer, VSphereError
from vmgahp.drivers.vmware.session import Session
from vmgahp.drivers.vmware.transport import Trust, normalize_thumbprint
from vmgahp.drivers.vmware.vsphere import VSphere

pytestmark = pytest.mark.vcsim


def _forms(password: str) -> list[str]:
    """The password as sent and as the XML request carries it, and its random core."""
    escaped = password.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return [password, escaped, password.split("-")[1][:16]]


def _everything_about(exc: BaseException) -> str:
    text = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        text += [str(exc), repr(exc)]
    return "\n".join(text)


def test_login_with_ca_file(vcsim, connect):
    client = connect(vcsim)
    session = client.session
    assert session.logins == 1 and session.session_key
    assert session.api_version.startswith("vim.version.")
    assert session.cookie().startswith("vmware_soap_session=")
    # Logged in for real: a call that vcsim refuses without a session works.
    assert client.placement(pool=POOL).datastore_name == "LocalDS_0"


def test_wrong_password_is_refused_and_never_shown(vcsim, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    log_file = tmp_path / "gahp.log"
    log.setup(path=str(log_file), debug=True)
    wrong = vcsim.password + "-not"
    try:
        with pytest.raises(LoginRefused) as refused:
            VSphere.connect(vcsim.host, vcsim.user, Secret(wrong), port=vcsim.port, ca_file=str(vcsim.ca_file),
                            timeout=10)  # fmt: skip
        # A good login afterwards logs something, so the log file is known to work.
        VSphere.connect(vcsim.host, vcsim.user, Secret(vcsim.password), port=vcsim.port,
                        ca_file=str(vcsim.ca_file), timeout=10).close()  # fmt: skip
    finally:
        log.setup()
    exc = refused.value
    assert exc.fault == "InvalidLogin"
    assert vcsim.user in str(exc) and "refused" in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None  # no pyVmomi frames (and their locals) kept
    captured = capfd.readouterr()
    logged = log_file.read_text()
    assert "vsphere_login" in logged
    haystack = "\n".join([_everything_about(exc), caplog.text, logged, captured.out, captured.err])
    for form in _forms(wrong) + _forms(vcsim.password):
        assert form not in haystack


def test_secret_and_session_reprs_hide_the_password(vcsim, connect):
    secret = Secret(vcsim.password)
    assert repr(secret) == str(secret) == "<secret>"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(secret)
    client = connect(vcsim)
    for text in (repr(client), repr(client.session), str(client.session.__dict__)):
        for form in _forms(vcsim.password):
            assert form not in text


def test_pinned_thumbprint(vcsim, connect):
    client = connect(vcsim, thumbprint=vcsim.thumbprint)
    assert client.session.trust.ca_file is None
    # Every new connection is checked again, not only the first one.
    client.session._stub.DropConnections()
    assert client.placement(pool=POOL).dc_path == "DC0"
    assert client.list_folder(client.placement(pool=POOL), "") is not None  # the HTTP side too


def test_wrong_thumbprint_is_refused(vcsim):
    wrong = "00:" * 31 + "00"
    with pytest.raises(UntrustedServer, match="pinned"):
        VSphere.connect(vcsim.host, vcsim.user, Secret(vcsim.password), port=vcsim.port, thumbprint=wrong, timeout=10)


def test_self_signed_certificate_is_refused_without_ca_or_thumbprint(vcsim):
    # 127.0.0.1: where pyVmomi would switch verification off if given no SSL context.
    with pytest.raises(UntrustedServer, match="system CAs"):
        VSphere.connect(vcsim.host, vcsim.user, Secret(vcsim.password), port=vcsim.port, timeout=10)


def test_thumbprint_format():
    assert normalize_thumbprint("AB:" * 31 + "CD") == "ab" * 31 + "cd"
    with pytest.raises(ValueError, match="SHA-256"):
        Trust(thumbprint="ab" * 20)  # a SHA-1 thumbprint


def test_nothing_listening_is_unreachable_at_once(vcsim):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(Unreachable, match="refused"):
        Session.connect("127.0.0.1", vcsim.user, Secret(vcsim.password), port=port, ca_file=str(vcsim.ca_file),
                        timeout=5)  # fmt: skip
    assert time.monotonic() - started < 2


def test_a_server_that_never_answers_times_out_within_the_deadline(vcsim):
    with socket.socket() as silent:  # accepts (the kernel does), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(VSphereError, match="no answer within") as late:
            Session.connect("127.0.0.1", vcsim.user, Secret(vcsim.password), port=silent.getsockname()[1],
                            ca_file=str(vcsim.ca_file), timeout=1.5)  # fmt: skip
    elapsed = time.monotonic() - started
    assert type(late.value).__name__ == "TimedOut"
    assert 1.3 < elapsed < 2.5
