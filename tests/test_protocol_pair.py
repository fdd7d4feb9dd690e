"""Both ends of the protocol in one process (the h11 way): ``GahpPair`` wires the
starter's client to the gahp's session, no pipes, no threads; plus the STATUS
text and the starter->gahp environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmgahp.protocol import client as client_mod
from vmgahp.protocol.client import (
    BATCH,
    LAST_REQUEST_ID,
    MAX_WORD,
    NEED_DATA,
    NO_REPLY,
    ONE_LINE,
    Banner,
    Closed,
    GahpClient,
    Notification,
    ProtocolError,
    Reply,
    Result,
    Results,
    Unexpected,
    WordTooLong,
    argv_words,
    classify,
)
from vmgahp.protocol.commands import COMMANDS_REPLY
from vmgahp.protocol.env import GahpEnvironment, gahp_environment, read_gahp_environment
from vmgahp.protocol.status import Status, format_status, parse_status
from vmgahp.protocol.testing import BANNER, GahpPair
from vmgahp.protocol.wire import escape

AD = ['VM_WORKING_DIR = "/scratch"', "ClusterId = 42", 'JobVMType = "kvm"']


def started() -> GahpPair:
    pair = GahpPair()
    pair.handshake()
    pair.send_ad(AD)
    return pair


# ----------------------------------------------------------------- a conversation
def test_handshake_as_the_starter_does_it() -> None:
    pair = GahpPair()
    assert pair.events == [Banner(BANNER, BANNER)]
    assert pair.client.banner == BANNER
    commands, types, async_on = pair.handshake()
    assert commands.line == COMMANDS_REPLY and commands.ok and commands.command == "COMMANDS"
    assert types.words == ("S", "xen", "kvm")
    assert async_on == Reply("ASYNC_MODE_ON", ("S",), "S")
    # Every line the starter wrote ends in CRLF; every gahp line in LF.
    sent = [data for way, data in pair.wire if way == ">"]
    assert sent == [b"COMMANDS\r\n", b"SUPPORT_VMS\r\n", b"ASYNC_MODE_ON\r\n"]
    assert all(data.endswith(b"\n") and not data.endswith(b"\r\n") for way, data in pair.wire if way == "<")


def test_classad_block_lines_get_no_reply_and_reach_the_start() -> None:
    pair = GahpPair()
    pair.handshake()
    assert pair.command("CLASSAD").ok and pair.client.in_ad
    # Inside the block QUIT and RESULTS are attributes: nothing is due.
    for line in ["A = 1", "QUIT", "RESULTS", 'B = "x\\ y"']:
        assert pair.send(line) == []
        assert pair.client.expecting is None
    assert pair.command("CLASSAD_END").ok and not pair.client.in_ad
    request_id, events = pair.request("CONDOR_VM_START", "kvm")
    assert events == [Reply("CONDOR_VM_START", ("S",), "S", request_id)]
    assert pair.dispatched[request_id].ad_lines == ("A = 1", "QUIT", "RESULTS", 'B = "x\\ y"')


def test_start_r_results_and_the_stored_result() -> None:
    pair = started()
    request_id, _ = pair.request("CONDOR_VM_START", "kvm")
    assert pair.wire[-2] == (">", b"CONDOR_VM_START 2 kvm\r\n")
    assert pair.client.pending == {2}
    assert pair.complete(request_id, True, "1") == [Notification(("R",), "R")]
    batch = pair.poll()
    assert batch == Results(("S", "1"), "S 1", (Result(2, True, "1", ("2", "0", "1")),), ("2 0 1",))
    assert pair.client.pending == frozenset()
    assert pair.client.take(2) == Result(2, True, "1", ("2", "0", "1"))
    assert pair.client.take(2) is None


def test_one_r_per_batch_and_results_in_completion_order() -> None:
    pair = started()
    start, _ = pair.request("CONDOR_VM_START", "kvm")
    status, _ = pair.request("CONDOR_VM_STATUS", "1")
    stop, _ = pair.request("CONDOR_VM_STOP", "1")
    assert pair.complete(status, True, "STATUS=Running") == [Notification(("R",), "R")]
    assert pair.complete(start, True, "1") == []  # the R of this batch was sent
    assert pair.complete(stop, False, "VMGAHP_ERR_VM_NOT_FOUND") == []
    batch = pair.poll()
    assert [(r.request_id, r.ok, r.text) for r in batch.results] == [
        (status, True, "STATUS=Running"), (start, True, "1"), (stop, False, "VMGAHP_ERR_VM_NOT_FOUND")]
    assert pair.poll().results == ()  # S 0; a later result is announced again
    getpid, _ = pair.request("CONDOR_VM_GETPID", "1")
    assert pair.complete(getpid, True, "0") == [Notification(("R",), "R")]


def test_an_r_between_the_reply_lines_is_dropped_where_it_lands() -> None:
    client = GahpClient(banner=False)
    client.request("CONDOR_VM_STATUS", "1")
    client.send_line("RESULTS")
    events = client.receive(b"R\nS\nR\nS 1\nR\n2 0 NULL\n")
    assert [type(e) for e in events] == [Notification, Reply, Notification, Notification, Results]
    assert client.take(2) == Result(2, True, "NULL", ("2", "0", "NULL"))


def test_empty_text_is_null_and_refused_requests_leave_nothing_pending() -> None:
    pair = started()
    stop, _ = pair.request("CONDOR_VM_STOP", "1")
    pair.complete(stop)
    assert pair.poll().results[0].text == "NULL"
    # A type the gahp does not run: E at once, no result will come.
    pair = GahpPair(supported_types=("kvm",))
    request_id, events = pair.request("CONDOR_VM_START", "xen")
    assert events == [Reply("CONDOR_VM_START", ("E",), "E", request_id)] and not events[0].ok
    assert pair.client.pending == frozenset()


def test_an_abandoned_request_drops_its_late_result() -> None:
    pair = started()
    status, _ = pair.request("CONDOR_VM_STATUS", "1")
    pair.client.abandon(status)
    assert pair.client.new_id() == status + 1  # the abandoned id stays reserved
    pair.complete(status, True, "STATUS=Running")
    batch = pair.poll()
    assert [r.request_id for r in batch.results] == [status]  # it arrived...
    assert pair.client.results == {} and pair.client.pending == frozenset()  # ...and was dropped
    # A stored result is dropped too.
    again, _ = pair.request("CONDOR_VM_STATUS", "1")
    pair.complete(again, True, "STATUS=Running")
    pair.poll()
    pair.client.abandon(again)
    assert pair.client.take(again) is None


def test_quit_closes_the_stream() -> None:
    pair = started()
    events = pair.send("QUIT")
    assert events == [Reply("QUIT", ("S",), "S"), Closed()]
    assert pair.closed


# -------------------------------------------------------------------- escaping
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_an_escaped_text_round_trips_as_one_word(text: str) -> None:
    pair = GahpPair()
    request_id, _ = pair.request("CONDOR_VM_STOP", "1")
    pair.complete(request_id, False, escape(text))
    [result] = pair.poll().results
    if text:
        assert result.words == ("2", "1", text) and result.text == text
    else:
        assert result.text == "NULL"


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60))
def test_ad_lines_reach_the_session_byte_for_byte(line: str) -> None:
    if line.isascii() and line.upper() == "CLASSAD_END":
        return
    pair = GahpPair()
    pair.send_ad([line])
    _request_id, _ = pair.request("CONDOR_VM_START", "kvm")
    # The C++ quirk, kept: a line ending in an unpaired backslash escapes the
    # CR of the starter's CRLF, so the gahp keeps that CR.
    odd = (len(line) - len(line.rstrip("\\"))) % 2
    assert pair.dispatched[2].ad_lines == (line + "\r" * odd,)


def test_read_argv_rules() -> None:
    assert argv_words("7 1 STATUS=Running\\ CPUTIME=1") == ["7", "1", "STATUS=Running CPUTIME=1"]
    assert argv_words("S  a\\\\b\r") == ["S", "", "a\\b"]  # an empty word; CR ignored
    assert argv_words("a\tb") == ["a\tb"]  # only a space separates
    client = GahpClient(banner=False)
    assert client.receive(b"1 0 x\\\ny\n") == [Unexpected(("1", "0", "x\ny"), "1 0 x\\\ny")]  # escaped LF kept
    # Any one-word line beginning with R is a notification, escaped or not.
    events = GahpClient(banner=False).receive(b"Rfoo\n\\R\nR x\n")
    assert [type(e) for e in events] == [Notification, Notification, Unexpected]


def test_the_10_kib_word_rule() -> None:
    pair = GahpPair()
    request_id, _ = pair.request("CONDOR_VM_STOP", "1")
    pair.complete(request_id, False, "x" * (MAX_WORD - 1))
    assert pair.poll().results[0].text == "x" * (MAX_WORD - 1)
    request_id, _ = pair.request("CONDOR_VM_STOP", "1")
    pair.complete(request_id, False, "x" * MAX_WORD)
    with pytest.raises(WordTooLong):
        pair.poll()
    # Per word: escaped spaces do not end one; unescaped ones do.
    with pytest.raises(WordTooLong):
        argv_words("S " + "x\\ " * (MAX_WORD // 2))
    assert len(argv_words(" ".join(["x" * 1000] * 30))) == 30
    # Raised when the starter would read that line, not before: the line before is fine.
    client = GahpClient(banner=False)
    client.receive_data(b"S\nS " + b"y" * MAX_WORD + b"\n")
    assert isinstance(client.next_event(), Unexpected)
    with pytest.raises(WordTooLong):
        client.next_event()


def test_parsing_waits_to_be_asked() -> None:
    """A line waiting unread is the reply to whatever is sent before it is read."""
    client = GahpClient(banner=False)
    client.receive_data(b"S 0\n")
    client.send_line("RESULTS")
    assert client.next_event() == Results(("S", "0"), "S 0", (), ())
    assert client.next_event() is NEED_DATA
    client.receive_data(b"partial")
    client.receive_data(b"")
    assert client.next_event() == Closed(b"partial")


def test_bad_results_replies_are_protocol_errors() -> None:
    for reply in (b"S\n", b"E\n", b"S -1\n", b"X 2\n"):
        client = GahpClient(banner=False)
        client.send_line("RESULTS")
        with pytest.raises(ProtocolError):
            client.receive(reply)
    # strtol: "S 1x" is one result; a line whose id is not > 0 is skipped.
    client = GahpClient(banner=False)
    client.request("CONDOR_VM_GETPID", "1")
    client.send_line("RESULTS")
    [_s, batch] = client.receive(b"S\nS 2x\nbad 0 1\n2 0 0\n")
    assert [r.request_id for r in batch.results] == [2] and batch.lines == ("bad 0 1", "2 0 0")


def test_banner_skips_to_the_dollar_and_drops_backslashes() -> None:
    client = GahpClient()
    assert client.receive(b"noise\nmore $VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $\nS\n") == [
        Banner("$VMGahpVersion 0.0.1 May 1 2007 Condor VMGAHP $",
               "more $VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $"),
        Unexpected(("S",), "S"),
    ]
    with pytest.raises(ProtocolError):
        GahpClient().receive(b"$" + b"v" * 400)


def test_lines_are_classified_as_the_gahp_takes_them() -> None:
    assert classify("RESULTS", False) == (BATCH, "RESULTS", None, False)
    assert classify("results", False).reply == BATCH  # case-insensitive, as strcasecmp
    assert classify("RESULTS ", False) == (ONE_LINE, None, None, False)  # two words: E
    assert classify("CONDOR_VM_STATUS 7 1", False) == (ONE_LINE, "CONDOR_VM_STATUS", 7, False)
    assert classify("CONDOR_VM_STATUS  7 1", False).command is None
    assert classify("CLASSAD", False).in_ad
    assert classify("RESULTS", True) == (NO_REPLY, None, None, True)
    assert classify("classad_end", True) == (ONE_LINE, "CLASSAD_END", None, False)


# ----------------------------------------------------------------- request ids
def test_request_ids_start_at_2_and_roll_over_skipping_ids_in_use() -> None:
    client = GahpClient()
    first, data = client.request("CONDOR_VM_STATUS", "1")
    assert first == 2 and data == b"CONDOR_VM_STATUS 2 1\r\n"
    assert client.new_id() == 3
    client.last_id = LAST_REQUEST_ID - 1
    assert client.new_id() == LAST_REQUEST_ID
    assert client.new_id() == 1  # then 2 is still pending: skipped
    assert client.new_id() == 3


def test_a_raw_request_line_is_tracked_too() -> None:
    pair = GahpPair()
    pair.send("CONDOR_VM_GETPID 77 1")
    assert pair.client.pending == {77}
    pair.complete(77, False, "VMGAHP_ERR_VM_NOT_FOUND")
    pair.poll()
    assert pair.client.take(77) == Result(77, False, "VMGAHP_ERR_VM_NOT_FOUND", ("77", "1", "VMGAHP_ERR_VM_NOT_FOUND"))
    # A duplicate of a pending id: E, and the first stays pending.
    pair.send("CONDOR_VM_GETPID 78 1")
    assert not pair.command("CONDOR_VM_GETPID 78 1").ok
    assert pair.client.pending == {78}


# ---------------------------------------------------------------------- status
def test_status_format_is_the_cpp_text() -> None:
    assert format_status("Stopped") == "STATUS=Stopped"
    assert format_status("Running", utilization=1, cpu_time=0.5, memory_kib=131072, max_memory_kib=262144) == (
        "STATUS=Running CPUUTILIZATION=1.000000 CPUTIME=0.500000 MEMORY=131072 MAXMEMORY=262144")
    assert format_status("Running", utilization=0.25, cpu_time=12.3456789) == (
        "STATUS=Running CPUUTILIZATION=0.250000 CPUTIME=12.345679")  # %f: 6 decimals
    assert format_status("Running", utilization=0, cpu_time=1, max_memory_kib=5) == (
        "STATUS=Running CPUUTILIZATION=0.000000 CPUTIME=1.000000 MAXMEMORY=5")  # zero figures left out
    assert format_status("Running", mac="52:54:00:00:00:01", ip="10.0.0.2") == (
        "MAC=52:54:00:00:00:01 IP=10.0.0.2 STATUS=Running")
    with pytest.raises(ValueError):
        format_status("Running", cpu_time=1.0)
    with pytest.raises(ValueError):
        format_status("Suspended", memory_kib=5)


@given(st.sampled_from(["Running", "Suspended", "Stopped"]), st.floats(0, 1), st.floats(0.001, 1e6),
       st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_status_round_trip(state: str, utilization: float, cpu_time: float, memory: int, max_memory: int) -> None:
    text = format_status(state, utilization=utilization, cpu_time=cpu_time, memory_kib=memory,
                         max_memory_kib=max_memory)
    status = parse_status(text)
    assert status is not None and status.state == state
    assert status.utilization == pytest.approx(utilization, abs=1e-6)
    assert status.cpu_time == pytest.approx(cpu_time, abs=1e-6)
    assert status.memory_kib == (memory or None) and status.max_memory_kib == (max_memory or None)


def test_status_parse_follows_the_starter() -> None:
    assert parse_status("STATUS=Stopped") == Status("Stopped")
    assert parse_status("status='Running' cputime=\"2.5\"") == Status("Running", cpu_time=2.5)  # keys, quotes
    assert parse_status("MAC=aa IP=b STATUS=Running PID=-3 X=1 junk =y") == Status(
        "Running", pid=0, mac="aa", ip="b")  # unknown keys, no '=', '=' first: ignored; PID <= 0 is 0
    assert parse_status("STATUS=Running CPUTIME=0") == Status("Running")  # CPUTIME <= 0: not used
    assert parse_status("STATUS=Running CPUTIME=3s CPUUTILIZATION=x MEMORY=12kB") == Status(
        "Running", cpu_time=3.0, utilization=0.0, memory_kib=12)  # strtod/strtol prefixes
    assert parse_status("STATUS=Running STATUS=Suspended").state == "Suspended"  # the last one wins
    assert parse_status("ſtatus=Running") is None  # strcasecmp folds ASCII only
    assert parse_status("CPUTIME=1") is None and parse_status("STATUS=") is None and parse_status("") is None


def test_the_gahp_status_reaches_the_starter_through_the_pair() -> None:
    pair = started()
    request_id, _ = pair.request("CONDOR_VM_STATUS", "1")
    pair.complete(request_id, True, format_status("Running", utilization=1.0, cpu_time=4.0, memory_kib=1024))
    pair.poll()
    assert parse_status(pair.client.take(request_id).text) == Status(
        "Running", cpu_time=4.0, utilization=1.0, memory_kib=1024)


# ------------------------------------------------------------------ environment
def test_environment_as_the_starter_builds_it() -> None:
    assert gahp_environment("KVM", "/scratch", 1000, 50) == {
        "VMGAHP_VMTYPE": "kvm", "VMGAHP_WORKING_DIR": "/scratch", "VMGAHP_USER_UID": "1000", "VMGAHP_USER_GID": "50"}
    assert gahp_environment("kvm", "/s", 1000, 0)["VMGAHP_USER_GID"] == "1000"  # gid <= 0: the uid
    assert gahp_environment("kvm", "/s", 1000, -1)["VMGAHP_USER_GID"] == "1000"
    assert gahp_environment("kvm", "/s", 0, 5) == {"VMGAHP_VMTYPE": "kvm", "VMGAHP_WORKING_DIR": "/s"}


@pytest.mark.parametrize("uid", [None, "", "  ", "abc", "0", "-5", "12abc", "²", "99999999999"])
def test_an_unusable_uid_counts_as_unset(uid: str | None) -> None:
    env = {} if uid is None else {"VMGAHP_USER_UID": uid, "VMGAHP_USER_GID": "7"}
    assert read_gahp_environment(env) == GahpEnvironment("", "", None, None)


def test_environment_read_back() -> None:
    for uid, gid in ((1000, 50), (1000, 0), (0, 0)):
        env = read_gahp_environment(gahp_environment(" Xen ".strip(), "/scratch", uid, gid))
        assert env == GahpEnvironment("xen", "/scratch", uid or None, (gid or uid) or None)
    assert read_gahp_environment({"VMGAHP_VMTYPE": " KVM \n", "VMGAHP_USER_UID": " 42 ", "VMGAHP_USER_GID": "x"}) == (
        GahpEnvironment("kvm", "", 42, 42))


# ------------------------------------------------------------------------ purity
def test_the_protocol_package_imports_only_the_standard_library_and_itself() -> None:
    import sys

    package = Path(client_mod.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith("vmgahp.protocol") or top == "__future__", (
                    path.name, name)
