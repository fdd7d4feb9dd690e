"""Tier 1: the pure GAHP state machine, driven line by line (spec 2.4-2.7, 3, Q5, Q6)."""

from __future__ import annotations

import pytest

from vmgahp.protocol.commands import COMMANDS_REPLY
from vmgahp.protocol.session import Dispatch, GahpSession, Quit, Request, Send

VERSION = "$VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $"
S = Send("S")
E = Send("E")
R = Send("R")


@pytest.fixture
def session() -> GahpSession:
    return GahpSession(("xen", "kvm"), VERSION)


def feed(session: GahpSession, *lines: str) -> list:
    """All actions produced by a sequence of lines."""
    out: list = []
    for line in lines:
        out.extend(session.receive_line(line))
    return out


def texts(actions) -> list[str]:
    return [a.text for a in actions]


# --------------------------------------------------------------------------- local commands (3.1)
class TestLocalReplies:
    def test_async_mode_on(self, session):
        """ASYNC_MODE_ON answers exactly S."""
        assert session.receive_line("ASYNC_MODE_ON") == [S]
        assert session.async_mode is True

    def test_async_mode_off(self, session):
        """ASYNC_MODE_OFF answers exactly S and turns async mode off."""
        assert session.receive_line("ASYNC_MODE_OFF") == [S]
        assert session.async_mode is False

    def test_async_mode_starts_on(self, session):
        """The session starts in async mode, as the C++ gahp does."""
        assert session.async_mode is True

    def test_version(self, session):
        """VERSION answers S followed by the version line."""
        assert session.receive_line("VERSION") == [Send("S $VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $")]

    def test_commands(self, session):
        """COMMANDS answers S and the 17 names in the C++ order."""
        reply = session.receive_line("COMMANDS")
        assert reply == [Send(COMMANDS_REPLY)]
        assert reply[0].text.split()[0] == "S"
        assert len(reply[0].text.split()) == 18

    def test_support_vms(self, session):
        """SUPPORT_VMS answers 'S xen kvm'."""
        assert session.receive_line("SUPPORT_VMS") == [Send("S xen kvm")]

    def test_support_vms_lower_cases_types(self):
        """Supported types are reported lower-cased."""
        assert GahpSession(("KVM",), VERSION).receive_line("SUPPORT_VMS") == [Send("S kvm")]

    def test_results_empty(self, session):
        """RESULTS with nothing queued answers 'S 0' and nothing else."""
        assert session.receive_line("RESULTS") == [Send("S 0")]

    def test_classad_and_end(self, session):
        """CLASSAD answers S, and CLASSAD_END closing the block answers S."""
        assert session.receive_line("CLASSAD") == [S]
        assert session.receive_line("CLASSAD_END") == [S]

    def test_classad_end_outside_block(self, session):
        """CLASSAD_END outside a block still answers S (spec 3.3)."""
        assert session.receive_line("CLASSAD_END") == [S]

    def test_quit(self, session):
        """QUIT yields a Quit action, not an immediate S (the shell sends S after cleanup)."""
        actions = session.receive_line("QUIT")
        assert actions == [Quit()]
        assert type(actions[0]) is Quit
        assert session.quitting is True

    @pytest.mark.parametrize("line", ["RESULTS\\", "RESULTS\\x", "RESULT\\S"])
    def test_escapes_in_command_word(self, session, line):
        """Escapes are resolved before lookup: a trailing backslash or escaped last character is dropped (spec 2.2)."""
        expected = [Send("S 0")] if line != "RESULT\\S" else [E]  # 'RESULT\S': the escaped S is last, so dropped
        assert session.receive_line(line) == expected

    def test_escaped_character_inside_command_word(self, session):
        """An escaped character that is not last is kept literally in the command word."""
        assert session.receive_line("RESUL\\TS") == [Send("S 0")]

    @pytest.mark.parametrize("line", ["results", "Results", "commands", "async_mode_on", "support_vms"])
    def test_case_insensitive(self, session, line):
        """Command words are matched case-insensitively."""
        assert session.receive_line(line)[0].text.startswith("S")


# --------------------------------------------------------------------------- E replies
class TestErrors:
    @pytest.mark.parametrize("line", ["", "FOO", "VM_TYPE", "CONDOR_VM_FOO 2 1", "R", "S", "RESULT"])
    def test_unknown_command(self, session, line):
        """Unknown command words (and the empty line) get E."""
        assert session.receive_line(line) == [E]

    @pytest.mark.parametrize(
        "line",
        [
            "RESULTS extra",
            "RESULTS ",
            " RESULTS",
            "QUIT now",
            "COMMANDS x",
            "CLASSAD x",
            "CLASSAD_END x",
            "VERSION 1",
            "ASYNC_MODE_ON 1",
            "CONDOR_VM_STATUS 5",
            "CONDOR_VM_STATUS 5 1 1",
            "CONDOR_VM_STATUS  5 1",
            "CONDOR_VM_START 2",
            "CONDOR_VM_START 2 kvm extra",
            "CONDOR_VM_STOP",
        ],
    )
    def test_wrong_arity(self, session, line):
        """Any word count other than the command's exact arity gets E (empty words count)."""
        assert session.receive_line(line) == [E]

    @pytest.mark.parametrize("rid", ["0", "-3", "+3", "abc", "3a", "", "١", "2147483648"])
    def test_bad_request_id(self, session, rid):
        """Request ids that are not ASCII digits > 0 within a C int get E."""
        assert session.receive_line(f"CONDOR_VM_STATUS {rid} 1") == [E]
        assert session.receive_line(f"CONDOR_VM_START {rid} kvm") == [E]

    @pytest.mark.parametrize("vid", ["-1", "abc", "1x", "+1"])
    def test_bad_vm_id(self, session, vid):
        """A vm-id word that is not all ASCII digits gets E."""
        assert session.receive_line(f"CONDOR_VM_STOP 4 {vid}") == [E]

    @pytest.mark.parametrize("vm_type", ["vmware", "qemu", "", "kvm2", "xenx"])
    def test_start_unsupported_type(self, session, vm_type):
        """CONDOR_VM_START with a type other than xen/kvm gets an immediate E."""
        assert session.receive_line(f"CONDOR_VM_START 2 {vm_type}") == [E]

    @pytest.mark.parametrize("vm_type", ["\u212avm", "\u212aVM"])
    def test_start_type_is_compared_in_ascii(self, session, vm_type):
        """Found by the fuzzer: str.lower() folds the Kelvin sign to 'k';
        strcasecmp does not, so the C++ answers E."""
        assert session.receive_line(f"CONDOR_VM_START 2 {vm_type}") == [E]

    def test_start_type_only_configured(self):
        """A type the gahp does not offer is rejected even if it is otherwise valid."""
        s = GahpSession(("kvm",), VERSION)
        assert s.receive_line("CONDOR_VM_START 2 xen") == [E]

    def test_rejected_request_not_pending(self, session):
        """A command answered E leaves no pending request behind."""
        session.receive_line("CONDOR_VM_START 2 vmware")
        assert session.pending_ids == frozenset()


# --------------------------------------------------------------------------- VM commands
VM_ID_COMMANDS = [
    "CONDOR_VM_STOP",
    "CONDOR_VM_SUSPEND",
    "CONDOR_VM_SOFT_SUSPEND",
    "CONDOR_VM_RESUME",
    "CONDOR_VM_CHECKPOINT",
    "CONDOR_VM_STATUS",
    "CONDOR_VM_GETPID",
]


class TestVmCommands:
    @pytest.mark.parametrize("name", VM_ID_COMMANDS)
    def test_vm_command_dispatch(self, session, name):
        """A valid VM command answers S and then dispatches a request with its ids."""
        actions = session.receive_line(f"{name.lower()} 7 3")
        assert actions == [S, Dispatch(Request(7, name, vm_id=3))]
        assert [type(a) for a in actions] == [Send, Dispatch]
        assert type(actions[1].request) is Request
        assert (actions[1].request.command, actions[1].request.vm_type, actions[1].request.ad_lines) == (name, "", None)
        assert session.pending_ids == {7}

    def test_start_dispatch(self, session):
        """START answers S and dispatches with the lower-cased type and no ad (none received)."""
        actions = session.receive_line("CONDOR_VM_START 2 KVM")
        assert actions == [S, Dispatch(Request(2, "CONDOR_VM_START", vm_type="kvm", ad_lines=None))]
        assert [type(a) for a in actions] == [Send, Dispatch]
        assert (actions[1].request.vm_id, actions[1].request.vm_type) == (0, "kvm")

    def test_empty_vm_id_is_zero(self, session):
        """A trailing space gives an empty vm-id word, accepted as vm id 0 (quirk Q6)."""
        actions = session.receive_line("CONDOR_VM_STATUS 5 ")
        assert actions == [S, Dispatch(Request(5, "CONDOR_VM_STATUS", vm_id=0))]

    def test_tab_separated(self, session):
        """Tabs separate words like spaces."""
        actions = session.receive_line("CONDOR_VM_GETPID\t9\t1")
        assert actions == [S, Dispatch(Request(9, "CONDOR_VM_GETPID", vm_id=1))]

    def test_duplicate_pending_id(self, session):
        """A request id that is still pending gets E, whatever the command."""
        assert session.receive_line("CONDOR_VM_STATUS 4 1")[0] == S
        assert session.receive_line("CONDOR_VM_STATUS 4 1") == [E]
        assert session.receive_line("CONDOR_VM_START 4 kvm") == [E]
        assert session.pending_ids == {4}

    def test_id_reusable_after_completion(self, session):
        """Once its result is completed, a request id is accepted again."""
        session.receive_line("CONDOR_VM_STATUS 4 1")
        session.complete(4, True, "STATUS=Stopped")
        assert session.pending_ids == frozenset()
        assert session.receive_line("CONDOR_VM_STATUS 4 1") == [S, Dispatch(Request(4, "CONDOR_VM_STATUS", vm_id=1))]

    def test_several_pending(self, session):
        """Several requests may be pending at once (the async contract, spec 2.8)."""
        session.receive_line("CONDOR_VM_START 2 kvm")
        session.receive_line("CONDOR_VM_STATUS 3 1")
        session.receive_line("CONDOR_VM_STATUS 4 1")
        assert session.pending_ids == {2, 3, 4}


# --------------------------------------------------------------------------- R and RESULTS
class TestResults:
    def test_one_r_per_batch(self, session):
        """The first queued result prints a lone R; later ones print nothing until RESULTS."""
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1", "CONDOR_VM_STATUS 4 1")
        assert session.complete(2, True, "STATUS=Stopped") == [R]
        assert session.complete(3, True, "STATUS=Stopped") == []
        assert session.complete(4, True, "STATUS=Stopped") == []

    def test_results_clears_flag(self, session):
        """After RESULTS the next queued result prints R again."""
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1")
        assert session.complete(2, True, "a") == [R]
        session.receive_line("RESULTS")
        assert session.complete(3, True, "b") == [R]

    def test_empty_results_also_clears_flag(self, session):
        """Even a RESULTS answering 'S 0' re-arms the R."""
        feed(session, "CONDOR_VM_STATUS 2 1")
        session.complete(2, True, "a")
        assert session.receive_line("RESULTS") == [Send("S 1"), Send("2 0 a")]
        assert session.receive_line("RESULTS") == [Send("S 0")]  # nothing in flight: not held
        feed(session, "CONDOR_VM_STATUS 3 1")
        assert session.complete(3, True, "b") == [R]

    def test_results_oldest_first(self, session):
        """RESULTS returns 'S <n>' then the lines in completion order, and empties the queue."""
        feed(session, "CONDOR_VM_START 2 kvm", "CONDOR_VM_STATUS 3 1", "CONDOR_VM_STOP 4 1")
        session.complete(3, True, "STATUS=Running CPUUTILIZATION=1.000000")
        session.complete(2, True, "1")
        session.complete(4, False, "VMGAHP_ERR_VM_NOT_FOUND")
        assert texts(session.receive_line("RESULTS")) == [
            "S 3",
            "3 0 STATUS=Running CPUUTILIZATION=1.000000",
            "2 0 1",
            "4 1 VMGAHP_ERR_VM_NOT_FOUND",
        ]
        assert session.receive_line("RESULTS") == [Send("S 0")]

    def test_empty_text_is_null(self, session):
        """An empty result text is sent as NULL."""
        feed(session, "CONDOR_VM_STOP 2 1", "CONDOR_VM_SUSPEND 3 1")
        session.complete(2, True, "")
        session.complete(3, False, "")
        assert texts(session.receive_line("RESULTS")) == ["S 2", "2 0 NULL", "3 1 NULL"]

    def test_no_r_in_async_mode_off(self, session):
        """With ASYNC_MODE_OFF results are queued silently but still returned by RESULTS."""
        feed(session, "ASYNC_MODE_OFF", "CONDOR_VM_STATUS 2 1")
        assert session.complete(2, True, "STATUS=Stopped") == []
        assert texts(session.receive_line("RESULTS")) == ["S 1", "2 0 STATUS=Stopped"]

    def test_async_mode_off_does_not_clear_flag(self, session):
        """ASYNC_MODE_OFF then a result does not print R, and turning off never prints anything."""
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1")
        assert session.complete(2, True, "a") == [R]
        assert session.receive_line("ASYNC_MODE_OFF") == [S]
        assert session.complete(3, True, "b") == []

    def test_async_mode_on_rearms(self, session):
        """ASYNC_MODE_ON clears the 'R sent' flag, so the next result prints R without a RESULTS."""
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1")
        assert session.complete(2, True, "a") == [R]
        assert session.receive_line("ASYNC_MODE_ON") == [S]
        assert session.complete(3, True, "b") == [R]

    def test_async_mode_on_after_off(self, session):
        """Turning async mode back on makes later results announce themselves again."""
        feed(session, "ASYNC_MODE_OFF", "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1")
        assert session.complete(2, True, "a") == []
        feed(session, "ASYNC_MODE_ON")
        assert session.complete(3, True, "b") == [R]
        assert texts(session.receive_line("RESULTS")) == ["S 2", "2 0 a", "3 0 b"]

    def test_unknown_result_ignored(self, session):
        """A result for an id that was never accepted is dropped without R."""
        assert session.complete(99, True, "x") == []
        assert session.receive_line("RESULTS") == [Send("S 0")]

    def test_result_completed_twice_ignored(self, session):
        """A second result for an id already completed is dropped."""
        session.receive_line("CONDOR_VM_STATUS 2 1")
        assert session.complete(2, True, "first") == [R]
        assert session.complete(2, True, "second") == []
        assert texts(session.receive_line("RESULTS")) == ["S 1", "2 0 first"]

    def test_result_of_rejected_request_ignored(self, session):
        """A result for a request that got E is not pending and is ignored."""
        session.receive_line("CONDOR_VM_START 2 vmware")
        assert session.complete(2, False, "x") == []
        assert session.receive_line("RESULTS") == [Send("S 0")]


# --------------------------------------------------------------------------- CLASSAD mode (3.2, 3.3, Q5)
class TestHeldResults:
    """A RESULTS with nothing to report while requests run waits for the first
    result: the starter's blocking wait then gets it at once, as from the C++
    gahp, which runs a command before it reads the next line."""

    def test_held_until_the_first_result_then_r_and_the_reply(self, session):
        feed(session, "CONDOR_VM_CHECKPOINT 2 1")
        assert session.receive_line("RESULTS") == []
        assert session.holding
        assert session.complete(2, True, "") == [R, Send("S 1"), Send("2 0 NULL")]
        assert not session.holding
        assert session.receive_line("RESULTS") == [Send("S 0")]

    def test_no_r_when_it_was_already_sent(self, session):
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_CHECKPOINT 3 1")
        assert session.complete(2, True, "a") == [R]
        assert session.receive_line("RESULTS") == [Send("S 1"), Send("2 0 a")]
        feed(session, "CONDOR_VM_STATUS 4 1")
        assert session.complete(4, True, "b") == [R]
        assert session.receive_line("ASYNC_MODE_OFF") == [S]
        assert session.receive_line("RESULTS") == [Send("S 1"), Send("4 0 b")]
        assert session.receive_line("RESULTS") == []  # 3 still runs
        assert session.complete(3, True, "") == [Send("S 1"), Send("3 0 NULL")]  # async off: no R

    def test_queued_results_are_answered_at_once(self, session):
        """STATUS during a long CHECKPOINT: its result is not kept waiting."""
        feed(session, "CONDOR_VM_CHECKPOINT 2 1", "CONDOR_VM_STATUS 3 1")
        session.complete(3, True, "STATUS=Running")
        assert session.receive_line("RESULTS") == [Send("S 1"), Send("3 0 STATUS=Running")]

    def test_any_line_answers_a_held_results_first(self, session):
        feed(session, "CONDOR_VM_CHECKPOINT 2 1")
        session.receive_line("RESULTS")
        assert session.receive_line("COMMANDS")[0] == Send("S 0")
        assert not session.holding
        assert session.complete(2, True, "") == [R]

    def test_quit_answers_the_held_results_then_quits(self, session):
        feed(session, "CONDOR_VM_CHECKPOINT 2 1")
        session.receive_line("RESULTS")
        assert session.receive_line("QUIT") == [Send("S 0"), Quit()]

    def test_release_is_the_shells_time_limit(self, session):
        feed(session, "CONDOR_VM_CHECKPOINT 2 1")
        session.receive_line("RESULTS")
        assert session.release() == [Send("S 0")]
        assert session.release() == []
        assert session.complete(2, True, "") == [R]

    def test_a_malformed_or_overlong_line_also_releases(self, session):
        feed(session, "CONDOR_VM_CHECKPOINT 2 1")
        session.receive_line("RESULTS")
        assert session.receive_line(None) == [Send("S 0"), E]
        session.receive_line("RESULTS")
        assert session.receive_line("NOT_A_COMMAND") == [Send("S 0"), E]


class TestClassAdMode:
    def test_lines_swallowed_without_reply(self, session):
        """Inside a CLASSAD block every line, QUIT and RESULTS included, gets no reply."""
        assert session.receive_line("CLASSAD") == [S]
        for line in ['VM_WORKING_DIR = "/tmp/x"', "QUIT", "RESULTS", "COMMANDS", "garbage (", "",
                     "CONDOR_VM_STATUS 2 1"]:
            assert session.receive_line(line) == [], line
        assert session.quitting is False
        assert session.pending_ids == frozenset()

    def test_swallowed_lines_become_the_ad(self, session):
        """Every swallowed line, in order, is carried by the next START as the ad."""
        feed(session, "CLASSAD", 'VM_WORKING_DIR = "/tmp/x"', "QUIT", "JobVMMemory = 512", "CLASSAD_END")
        actions = session.receive_line("CONDOR_VM_START 2 kvm")
        assert actions[1].request.ad_lines == ('VM_WORKING_DIR = "/tmp/x"', "QUIT", "JobVMMemory = 512")

    @pytest.mark.parametrize("end", ["CLASSAD_END", "classad_end", "ClassAd_End"])
    def test_exact_end_case_insensitive(self, session, end):
        """Only the exact whole line CLASSAD_END, in any case, ends the block with S."""
        feed(session, "CLASSAD", "A = 1")
        assert session.receive_line(end) == [S]
        assert session.receive_line("RESULTS") == [Send("S 0")]

    @pytest.mark.parametrize("line",
                             ["CLASSAD_END extra", " CLASSAD_END", "CLASSAD_END ", "CLASSAD_ENDX", "CLASSAD_EN"])
    def test_near_end_swallowed(self, session, line):
        """A line that only resembles CLASSAD_END is swallowed as an attribute and the block goes on."""
        feed(session, "CLASSAD")
        assert session.receive_line(line) == []
        assert session.receive_line("RESULTS") == []  # still in ad mode
        assert session.receive_line("CLASSAD_END") == [S]
        start = session.receive_line("CONDOR_VM_START 2 kvm")
        assert start[1].request.ad_lines == (line, "RESULTS")

    def test_classad_inside_block_is_a_line(self, session):
        """CLASSAD inside a block is swallowed, not a restart of the block."""
        feed(session, "CLASSAD", "A = 1")
        assert session.receive_line("CLASSAD") == []
        feed(session, "CLASSAD_END")
        assert session.receive_line("CONDOR_VM_START 2 kvm")[1].request.ad_lines == ("A = 1", "CLASSAD")

    def test_new_classad_discards_previous(self, session):
        """A second CLASSAD block replaces the previous ad entirely."""
        feed(session, "CLASSAD", "A = 1", "CLASSAD_END", "CLASSAD", "B = 2", "CLASSAD_END")
        assert session.receive_line("CONDOR_VM_START 2 kvm")[1].request.ad_lines == ("B = 2",)

    def test_empty_block_gives_empty_ad(self, session):
        """An empty CLASSAD block gives an empty ad, not a missing one."""
        feed(session, "CLASSAD", "CLASSAD_END")
        assert session.receive_line("CONDOR_VM_START 2 kvm")[1].request.ad_lines == ()

    def test_end_outside_block_deletes_ad(self, session):
        """CLASSAD_END outside a block answers S and deletes the ad, so START carries None."""
        feed(session, "CLASSAD", "A = 1", "CLASSAD_END")
        assert session.receive_line("CLASSAD_END") == [S]
        assert session.receive_line("CONDOR_VM_START 2 kvm")[1].request.ad_lines is None

    def test_start_snapshot_not_changed_by_later_classad(self, session):
        """The ad carried by a dispatched START is a snapshot that a later CLASSAD does not change."""
        feed(session, "CLASSAD", "A = 1", "CLASSAD_END")
        request = session.receive_line("CONDOR_VM_START 2 kvm")[1].request
        feed(session, "CLASSAD", "B = 2", "C = 3", "CLASSAD_END", "CLASSAD_END")
        assert request.ad_lines == ("A = 1",)
        assert isinstance(request.ad_lines, tuple)

    def test_results_completed_during_block_kept(self, session):
        """A result completed while in ad mode is queued and delivered by a RESULTS after the block."""
        session.receive_line("CONDOR_VM_STATUS 2 1")
        feed(session, "CLASSAD")
        assert session.complete(2, True, "STATUS=Stopped") == [R]
        assert session.receive_line("RESULTS") == []  # swallowed
        feed(session, "CLASSAD_END")
        assert texts(session.receive_line("RESULTS")) == ["S 1", "2 0 STATUS=Stopped"]

    def test_non_ascii_lookalike_does_not_end_block(self, session):
        """A non-ASCII look-alike of CLASSAD_END ('ſ' upper-cases to 'S') is swallowed, not an end of block."""
        feed(session, "CLASSAD")
        assert session.receive_line("CLAſſAD_END") == []
        assert session.receive_line("CLASSAD_END") == [S]


# --------------------------------------------------------------------------- QUIT (1.9)
class TestQuit:
    def test_quit_drops_results_and_ignores_lines(self, session):
        """After QUIT, queued and pending results are dropped and every further line is ignored."""
        feed(session, "CONDOR_VM_STATUS 2 1", "CONDOR_VM_STATUS 3 1")
        session.complete(2, True, "a")
        assert session.receive_line("QUIT") == [Quit()]
        assert session.pending_ids == frozenset()
        assert session.complete(3, True, "b") == []
        for line in ("RESULTS", "COMMANDS", "QUIT", "FOO", "CLASSAD", "CONDOR_VM_STATUS 4 1"):
            assert session.receive_line(line) == [], line

    def test_quit_case_insensitive(self, session):
        """quit in lower case also quits."""
        actions = session.receive_line("quit")
        assert len(actions) == 1 and type(actions[0]) is Quit


# --------------------------------------------------------------------------- a starter conversation
def test_starter_conversation(session):
    """The spec's starter conversation produces exactly the expected replies (spec 0, 4.1)."""
    out: list[str] = []

    def run(line):
        for action in session.receive_line(line):
            out.append(action.text if isinstance(action, Send) else type(action).__name__)

    for line in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON", "CLASSAD", 'VM_WORKING_DIR = "/d"', "JobVMType = \"kvm\"",
                 "CLASSAD_END", "CONDOR_VM_START 2 kvm"):
        run(line)
    out.extend(a.text for a in session.complete(2, True, "1"))
    run("RESULTS")
    run("CONDOR_VM_STATUS 3 1")
    out.extend(a.text for a in session.complete(3, True, "STATUS=Running CPUUTILIZATION=1.000000 CPUTIME=0.5"))
    run("RESULTS")
    run("QUIT")
    assert out == [
        COMMANDS_REPLY,
        "S xen kvm",
        "S",
        "S",
        "S",
        "S",
        "Dispatch",
        "R",
        "S 1",
        "2 0 1",
        "S",
        "Dispatch",
        "R",
        "S 1",
        "3 0 STATUS=Running CPUUTILIZATION=1.000000 CPUTIME=0.5",
        "Quit",
    ]


def test_an_oversized_job_ad_is_not_kept() -> None:
    """Memory stays bounded: past MAX_AD_BYTES the block's lines are dropped and a
    START on that ad carries no ad (the runtime answers NO_JOBCLASSAD_INFO)."""
    from vmgahp.protocol.session import MAX_AD_BYTES, Dispatch, GahpSession

    session = GahpSession(("kvm",), "$VMGahpVersion x $")
    session.receive_line("CLASSAD")
    line = "A = \"" + "x" * 65536 + "\""
    for _ in range(MAX_AD_BYTES // len(line) + 2):
        assert session.receive_line(line) == []
    session.receive_line("CLASSAD_END")
    actions = session.receive_line("CONDOR_VM_START 2 kvm")
    dispatched = [a.request for a in actions if isinstance(a, Dispatch)]
    assert session.ad_too_big and dispatched[0].ad_lines is None
    session.receive_line("CLASSAD")  # a new block starts afresh
    session.receive_line("B = 1")
    session.receive_line("CLASSAD_END")
    actions = session.receive_line("CONDOR_VM_START 3 kvm")
    assert [a.request.ad_lines for a in actions if isinstance(a, Dispatch)] == [("B = 1",)]
