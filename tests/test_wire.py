"""Tier 1: input framing, word splitting and escaping (spec 2.1-2.3, 2.5)."""

from __future__ import annotations

import random

import pytest

from vmgahp.protocol.wire import LineFramer, escape, is_request_id, is_vm_id, result_line, split_words


# --------------------------------------------------------------------------- LineFramer
class TestLineFramer:
    def test_crlf_and_lf_both_end_a_line(self):
        """A line ends at CRLF (the starter's terminator) as well as at a bare LF."""
        framer = LineFramer()
        assert framer.feed(b"COMMANDS\r\nRESULTS\nQUIT\r\n") == ["COMMANDS", "RESULTS", "QUIT"]

    def test_no_line_until_newline(self):
        """Bytes without a newline stay buffered and produce no line."""
        framer = LineFramer()
        assert framer.feed(b"RESULTS") == []
        assert framer.pending is True
        assert framer.feed(b"\n") == ["RESULTS"]
        assert framer.pending is False

    def test_unescaped_cr_dropped_anywhere(self):
        """An unescaped CR is dropped wherever it appears, not only before LF."""
        framer = LineFramer()
        assert framer.feed(b"\rAB\rC\r\r\n") == ["ABC"]

    def test_cr_alone_does_not_end_a_line(self):
        """A CR is not a terminator: old-Mac style CR-only input never completes a line."""
        framer = LineFramer()
        assert framer.feed(b"A\rB\r") == []
        assert framer.feed(b"\n") == ["AB"]

    def test_escaped_lf_kept_with_backslash(self):
        """A backslash-escaped LF stays in the line, backslash included, and the line continues."""
        framer = LineFramer()
        assert framer.feed(b"A\\\nB\n") == ["A\\\nB"]

    def test_escaped_cr_kept_with_backslash(self):
        """A backslash-escaped CR stays in the line, backslash included."""
        framer = LineFramer()
        assert framer.feed(b"A\\\rB\r\n") == ["A\\\rB"]

    def test_double_backslash_resets_escape(self):
        """Two backslashes escape each other, so the following LF ends the line."""
        framer = LineFramer()
        assert framer.feed(b"A\\\\\nB\n") == ["A\\\\", "B"]

    def test_triple_backslash_escapes_newline(self):
        """An odd run of backslashes leaves the escape set, so the LF is kept as data."""
        framer = LineFramer()
        assert framer.feed(b"A\\\\\\\nB\n") == ["A\\\\\\\nB"]

    def test_other_byte_clears_escape(self):
        """A backslash followed by another character does not escape a later LF."""
        framer = LineFramer()
        assert framer.feed(b"A\\x\nB\n") == ["A\\x", "B"]

    def test_byte_by_byte_feed(self):
        """Lines split across feed() calls one byte at a time come out identical."""
        data = b"CLASSAD\r\nVM_WORKING_DIR = \"/tmp/x\"\r\nA\\\nB\r\nCLASSAD_END\r\n"
        framer = LineFramer()
        lines: list[str] = []
        for byte in data:
            lines.extend(framer.feed(bytes([byte])))
        assert lines == ["CLASSAD", 'VM_WORKING_DIR = "/tmp/x"', "A\\\nB", "CLASSAD_END"]
        assert LineFramer().feed(data) == lines

    def test_escape_state_survives_feed_boundary(self):
        """A backslash at the end of one chunk escapes the LF at the start of the next."""
        framer = LineFramer()
        assert framer.feed(b"A\\") == []
        assert framer.feed(b"\nB\n") == ["A\\\nB"]

    def test_utf8_split_across_feeds(self):
        """A multi-byte UTF-8 character split across feed() calls decodes whole."""
        framer = LineFramer()
        encoded = "é\n".encode()
        assert framer.feed(encoded[:1]) == []
        assert framer.feed(encoded[1:]) == ["é"]

    def test_empty_lines(self):
        """An empty line (just CRLF) is delivered as an empty string."""
        framer = LineFramer()
        assert framer.feed(b"\r\n\n") == ["", ""]


# --------------------------------------------------------------------------- split_words
class TestSplitWords:
    def test_simple(self):
        """Single spaces separate words."""
        assert split_words("CONDOR_VM_STATUS 5 1") == ["CONDOR_VM_STATUS", "5", "1"]

    def test_double_space_gives_empty_word(self):
        """Two spaces give an empty word, so the word count changes (spec 2.2)."""
        assert split_words("CONDOR_VM_STATUS  5 1") == ["CONDOR_VM_STATUS", "", "5", "1"]

    def test_leading_space_gives_empty_first_word(self):
        """A leading separator yields an empty first word."""
        assert split_words(" RESULTS") == ["", "RESULTS"]

    def test_trailing_space_gives_empty_last_word(self):
        """A trailing separator yields an empty last word (quirk Q6)."""
        assert split_words("CONDOR_VM_STATUS 5 ") == ["CONDOR_VM_STATUS", "5", ""]

    def test_empty_line_is_one_empty_word(self):
        """An empty line splits into a single empty word."""
        assert split_words("") == [""]

    def test_tabs_cr_lf_separate(self):
        """Tab, CR and LF are separators just like space."""
        assert split_words("A\tB\rC\nD") == ["A", "B", "C", "D"]
        assert split_words("A\t\tB") == ["A", "", "B"]

    def test_escaped_space_inside_word(self):
        """A backslash-escaped space is part of the word."""
        assert split_words("a\\ b c") == ["a b", "c"]

    def test_escaped_backslash_and_tab(self):
        """An escaped backslash or tab is literal inside the word."""
        assert split_words("a\\\\b\\\tc d") == ["a\\b\tc", "d"]

    def test_escaped_newline_from_framer(self):
        """The framer's kept backslash-LF becomes a literal LF in the word."""
        assert split_words("a\\\nb c") == ["a\nb", "c"]

    def test_escaped_last_character_dropped(self):
        """The C++ quirk: an escaped character in the last position is dropped."""
        assert split_words("ab\\c") == ["ab"]
        assert split_words("x \\ ") == ["x", ""]

    def test_escaped_second_to_last_character_kept(self):
        """Only the very last position is affected; an escape before it is kept."""
        assert split_words("ab\\cd") == ["abcd"]

    def test_escaped_last_multibyte_character_kept(self):
        """Found by the fuzzer: the C++ drops the last *byte* only, so a
        multi-byte character there keeps all its bytes (the escape took the
        first); an undecodable byte is one byte and is dropped."""
        assert split_words("COMMANDS\\\u00e9") == ["COMMANDS\u00e9"]
        assert split_words("CONDOR_VM_STOP 5 \\\u20ac") == ["CONDOR_VM_STOP", "5", "\u20ac"]
        assert split_words(b"COMMANDS\\\xff".decode("utf-8", "surrogateescape")) == ["COMMANDS"]

    def test_lone_trailing_backslash_dropped(self):
        """A lone backslash at the end of the line disappears."""
        assert split_words("ab\\") == ["ab"]
        assert split_words("ab \\") == ["ab", ""]


# --------------------------------------------------------------------------- escape / result_line
class TestEscape:
    def test_plain_text_unchanged(self):
        """Text with nothing to escape comes back unchanged."""
        assert escape("VMGAHP_ERR_INTERNAL") == "VMGAHP_ERR_INTERNAL"

    def test_space_backslash_cr_lf(self):
        """Space, backslash, CR and LF each get a backslash in front."""
        assert escape("a b\\c\rd\ne") == "a\\ b\\\\c\\\rd\\\ne"

    def test_status_text_escaped(self):
        """A stale STATUS text looks as in spec 3.6 once escaped."""
        assert escape("STATUS=Running CPUUTILIZATION=0.012345") == "STATUS=Running\\ CPUUTILIZATION=0.012345"

    def test_tab_not_escaped(self):
        """Only the four characters of makeErrorMessage are escaped; a tab is left alone."""
        assert escape("a\tb") == "a\tb"

    def test_empty(self):
        """Escaping an empty text gives an empty text."""
        assert escape("") == ""


class TestResultLine:
    def test_success(self):
        """A success result is '<id> 0 <text>'."""
        assert result_line(7, True, "3") == "7 0 3"

    def test_failure(self):
        """A failure result is '<id> 1 <text>'."""
        assert result_line(12, False, "VMGAHP_ERR_VM_NOT_FOUND") == "12 1 VMGAHP_ERR_VM_NOT_FOUND"

    def test_empty_text_is_null(self):
        """An empty text is sent as NULL for success and failure alike."""
        assert result_line(2, True, "") == "2 0 NULL"
        assert result_line(2, False, "") == "2 1 NULL"

    def test_multiword_status_kept(self):
        """A STATUS text is passed through unescaped."""
        assert result_line(5, True, "STATUS=Stopped X=1") == "5 0 STATUS=Stopped X=1"


# --------------------------------------------------------------------------- ids
class TestRequestId:
    @pytest.mark.parametrize("word", ["1", "2", "42", "990000000", "2147483647", "007"])
    def test_valid(self, word):
        """ASCII digit strings with a value in 1..INT_MAX are request ids."""
        assert is_request_id(word) is True

    @pytest.mark.parametrize(
        "word",
        ["", "0", "00", "+3", "-3", "1 0", " 1", "1.0", "abc", "3a", "١", "²", "１", "2147483648",
         "99999999999999999999"],
    )
    def test_invalid(self, word):
        """Signs, zero, blanks, non-ASCII digits and values beyond a C int are rejected."""
        assert is_request_id(word) is False


class TestVmId:
    @pytest.mark.parametrize("word", ["", "0", "1", "12345"])
    def test_valid(self, word):
        """Digit strings pass, and the empty word passes too (it names no VM)."""
        assert is_vm_id(word) is True

    @pytest.mark.parametrize("word", ["-1", "+1", "a", "1a", " ", "١"])
    def test_invalid(self, word):
        """Anything with a non-ASCII-digit character is not a VM id."""
        assert is_vm_id(word) is False


# --------------------------------------------------------------------------- property
_ALPHABET = "abcXYZ019_=.-/ \\\r\n\"'é"  # no tab: escape() leaves tabs alone by design


def _escape_each_word(words: list[str]) -> str:
    return " ".join(escape(w) for w in words)


def test_escape_split_round_trip_random():
    """For many random word lists, splitting the escaped, space-joined words (plus a guard word) gives them back."""
    rng = random.Random(20260921)
    for _ in range(3000):
        words = [
            "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 8)))
            for _ in range(rng.randint(1, 6))
        ]
        line = _escape_each_word(words) + " x"
        assert split_words(line) == words + ["x"], (words, line)


def test_framer_then_split_round_trip_random():
    """Escaped words survive the framer too: CR/LF inside words stay data, not terminators."""
    rng = random.Random(7)
    for _ in range(500):
        words = ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 4))]
        data = (_escape_each_word(words) + " x\r\n").encode()
        lines = LineFramer().feed(data)
        assert len(lines) == 1, (words, data)
        assert split_words(lines[0]) == words + ["x"]

