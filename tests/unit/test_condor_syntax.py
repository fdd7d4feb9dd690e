"""Tier 1: HTCondor's value syntaxes (condor_config.cpp, condor_arglist.cpp)."""

from __future__ import annotations

import pytest

from vmgahp.condor_syntax import ArgsError, condor_boolean, condor_integer, split_args_v1_raw_or_v2_quoted


class TestInteger:
    @pytest.mark.parametrize(
        "text,value",
        [("42", 42), (" 42 ", 42), ("-7", -7), ("+7", 7), ("007", 7), ("512 * 2", 1024), ("10 / 4", 2),
         ("7.9", 7), ("-7.9", -7), ("false", 0), ("(3 > 2) + 1", 2), ("2147483648", 2147483647),
         ("-99999999999", -2147483648)],
    )
    def test_values(self, text, value):
        """strtoll for a plain literal, else the expression's number (reals truncated, booleans 0/1, clamped)."""
        assert condor_integer(text) == value

    @pytest.mark.parametrize("text", ["", "abc", "1_000", "0x10", '"12"', "12 apples", "1 +", "\u0661", "undefined"])
    def test_invalid(self, text):
        """Not a literal and not a number-valued expression: None (the caller keeps its default)."""
        assert condor_integer(text) is None

    def test_unset(self):
        assert condor_integer(None) is None


class TestBoolean:
    @pytest.mark.parametrize(
        "text,value",
        [("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False), ("True \t", True),
         ("1 == 1", True), ("3", True), ("0.0", False), ("!true", False)],
    )
    def test_values(self, text, value):
        assert condor_boolean(text) is value

    @pytest.mark.parametrize("text", ["yes", "no", "t", "f", "on", "off", " true", "10x", '"true"', ""])
    def test_invalid(self, text):
        """Only true/1/false/0 are literals; 'yes' is an undefined attribute reference.
        (A leading blank defeats the literal and ' true' is then the expression true... see below.)"""
        if text == " true":
            # Not a literal (no leading blanks), but a valid expression: true.
            assert condor_boolean(text) is True
            return
        assert condor_boolean(text) is None


class TestArgs:
    @pytest.mark.parametrize(
        "text,words",
        [
            # V1 raw: blanks split, nothing quotes (an apostrophe is an ordinary character).
            ("/tmp/debug.log", ["/tmp/debug.log"]),
            ("  a  b\tc  ", ["a", "b", "c"]),
            ("it's here", ["it's", "here"]),
            ("'a b'", ["'a", "b'"]),
            ("", []),
            # V2 quoted: "..." with "" for a double quote; '...' groups, '' is a single quote.
            ('"a b"', ["a", "b"]),
            ("\"'a b' c\"", ["a b", "c"]),
            ("\"'it''s' x\"", ["it's", "x"]),
            ('"say ""hi"""', ["say", '"hi"']),
            ('  "x"  ', ["x"]),
            ('""', []),
        ],
    )
    def test_split(self, text, words):
        assert split_args_v1_raw_or_v2_quoted(text) == words

    @pytest.mark.parametrize("text,partial", [('"unterminated', []), ('"a" b', []), ("\"x 'y z\"", ["x"])])
    def test_errors_keep_the_words_before(self, text, partial):
        """Errors name the problem; the words parsed before it are kept (ArgList appends as it goes)."""
        with pytest.raises(ArgsError) as raised:
            split_args_v1_raw_or_v2_quoted(text)
        assert raised.value.partial == partial
