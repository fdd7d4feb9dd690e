"""Tier 1: argv parsing with the C++ gahp's rules (spec 1.1, 1.2, Q16, section 9)."""

from __future__ import annotations

import pytest

from vmgahp.gahp.argv import KILL, STANDALONE, TEST, Invocation, UsageError, c_atoi, parse_argv


# --------------------------------------------------------------------------- the real command lines (1.2)
class TestRealCommandLines:
    def test_starter_server(self):
        """The starter's '-f -M 3' selects server mode without terminal logging."""
        assert parse_argv(["-f", "-M", "3"]) == Invocation(STANDALONE, False)

    def test_starter_server_terminal(self):
        """'-f -t -M 3' selects server mode with the log on stderr."""
        assert parse_argv(["-f", "-t", "-M", "3"]) == Invocation(STANDALONE, True)

    def test_startd_probe(self):
        """The startd's probe '-f -M 0 vmtype kvm' selects TEST mode for kvm."""
        inv = parse_argv(["-f", "-M", "0", "vmtype", "kvm"])
        assert (inv.mode, inv.vm_type, inv.match, inv.terminal_log) == (TEST, "kvm", "", False)

    def test_kill(self):
        """'-f -M 4 vmtype kvm match <name>' selects KILL mode for that domain."""
        inv = parse_argv(["-f", "-M", "4", "vmtype", "kvm", "match", "alice_example.org_42.0"])
        assert (inv.mode, inv.vm_type, inv.match) == (KILL, "kvm", "alice_example.org_42.0")

    def test_kill_terminal(self):
        """-t before -M sets terminal logging in kill mode as well."""
        inv = parse_argv(["-f", "-t", "-M", "4", "vmtype", "xen", "match", "bob_1.2"])
        assert (inv.mode, inv.terminal_log, inv.vm_type, inv.match) == (KILL, True, "xen", "bob_1.2")

    def test_without_f(self):
        """DaemonCore flags are optional: '-M 3' alone is server mode."""
        assert parse_argv(["-M", "3"]).mode == STANDALONE

    def test_server_ignores_extra_argv(self):
        """STANDALONE ignores anything after the mode."""
        assert parse_argv(["-f", "-M", "3", "vmtype", "kvm", "junk"]) == Invocation(STANDALONE, False)

    def test_pairs_in_any_order(self):
        """match may come before vmtype."""
        inv = parse_argv(["-M", "4", "match", "m1", "vmtype", "kvm"])
        assert (inv.vm_type, inv.match) == ("kvm", "m1")


# --------------------------------------------------------------------------- -M and atoi (1.1, Q16)
class TestMode:
    def test_garbage_mode_is_test(self):
        """'-M abc' is atoi 0, TEST mode (which then needs vmtype)."""
        assert parse_argv(["-f", "-M", "abc", "vmtype", "kvm"]).mode == TEST

    def test_garbage_mode_without_vmtype_is_usage(self):
        """'-M abc' alone is TEST mode lacking vmtype, a usage error."""
        with pytest.raises(UsageError):
            parse_argv(["-f", "-M", "abc"])

    def test_io_mode_is_server(self):
        """The deprecated '-M 1' is treated exactly like 3."""
        assert parse_argv(["-f", "-M", "1"]) == Invocation(STANDALONE, False)

    def test_atoi_leading_digits(self):
        """'-M 3abc' is atoi 3, server mode."""
        assert parse_argv(["-M", "3abc"]).mode == STANDALONE

    @pytest.mark.parametrize("mode", ["2", "5", "-1", "99", "-4"])
    def test_rejected_modes(self, mode):
        """WORKER (2), modes >= 5 and negative modes are usage errors."""
        with pytest.raises(UsageError):
            parse_argv(["-f", "-M", mode, "vmtype", "kvm", "match", "x"])

    @pytest.mark.parametrize(
        "argv",
        [[], ["-f"], ["-f", "-M"], ["-M"], ["-f", "-x", "-M", "3"], ["3"], ["-m", "3"], ["vmtype", "kvm"]],
    )
    def test_missing_or_misplaced_mode(self, argv):
        """Without a '-M <value>' pair (or with an unknown flag before it) the argv is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(argv)


class TestAtoi:
    @pytest.mark.parametrize(
        "text,value",
        [
            ("3", 3),
            ("0", 0),
            ("abc", 0),
            ("", 0),
            ("-1", -1),
            ("+4", 4),
            ("  7", 7),
            ("\t\n 8", 8),
            ("12abc", 12),
            ("3.9", 3),
            ("-", 0),
            ("+", 0),
            ("- 3", 0),
            ("٣", 0),
            ("00042", 42),
        ],
    )
    def test_c_atoi(self, text, value):
        """c_atoi follows C atoi: leading blanks, one optional sign, ASCII digits, garbage stops it."""
        assert c_atoi(text) == value


# --------------------------------------------------------------------------- keywords (1.2, section 9)
class TestKeywords:
    @pytest.mark.parametrize("keyword", ["vmtype", "vmtyp", "vm", "v", ""])
    def test_vmtype_prefixes(self, keyword):
        """Any prefix of 'vmtype', the empty string included, selects vmtype."""
        assert parse_argv(["-M", "0", keyword, "kvm"]).vm_type == "kvm"

    @pytest.mark.parametrize("keyword", ["match", "mat", "m"])
    def test_match_prefixes(self, keyword):
        """Any non-empty prefix of 'match' selects match."""
        inv = parse_argv(["-M", "4", "v", "kvm", keyword, "alice_1.0"])
        assert inv.match == "alice_1.0"

    def test_vmtype_lower_cased(self):
        """The vm type is lower-cased."""
        assert parse_argv(["-M", "0", "vmtype", "KVM"]).vm_type == "kvm"

    def test_match_kept_verbatim(self):
        """The match string is kept as given (it is a domain name)."""
        argv = ["-M", "4", "vmtype", "kvm", "match", "Alice_Example.org_42.0"]
        assert parse_argv(argv).match == "Alice_Example.org_42.0"

    @pytest.mark.parametrize(
        "argv",
        [
            ["-M", "0", "vmtype"],
            ["-M", "0", "vmtype", "kvm", "match"],
            ["-M", "4", "vmtype", "kvm", "m"],
        ],
    )
    def test_keyword_without_value(self, argv):
        """A keyword with no value after it is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(argv)

    @pytest.mark.parametrize("keyword", ["type", "vmtypes", "matches", "x", "-t", "vmx"])
    def test_unknown_keyword(self, keyword):
        """A word that is a prefix of neither keyword is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(["-M", "0", "vmtype", "kvm", keyword, "val"])

    def test_test_mode_needs_vmtype(self):
        """TEST mode without vmtype is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(["-M", "0", "match", "x"])

    def test_kill_needs_match(self):
        """KILL mode with vmtype but without match is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(["-f", "-M", "4", "vmtype", "kvm"])

    def test_kill_needs_vmtype(self):
        """KILL mode with match but without vmtype is a usage error."""
        with pytest.raises(UsageError):
            parse_argv(["-f", "-M", "4", "match", "x"])

    def test_test_mode_ignores_match(self):
        """TEST mode accepts a match pair and keeps it (it is simply unused)."""
        inv = parse_argv(["-M", "0", "vmtype", "xen", "match", "x"])
        assert (inv.mode, inv.vm_type) == (TEST, "xen")


# --------------------------------------------------------------------------- -t
class TestTerminalLog:
    def test_no_t(self):
        """Without -t the log does not go to the terminal."""
        assert parse_argv(["-f", "-M", "3"]).terminal_log is False

    def test_t_before_f(self):
        """-t is recognised wherever it sits among the leading DaemonCore flags."""
        assert parse_argv(["-t", "-f", "-M", "3"]).terminal_log is True

    def test_t_alone(self):
        """-t alone (it implies -f) sets terminal logging."""
        assert parse_argv(["-t", "-M", "0", "vmtype", "kvm"]).terminal_log is True
