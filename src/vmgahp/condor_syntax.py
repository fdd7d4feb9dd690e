"""HTCondor's value syntaxes, as HTCondor's own code reads them.

* :func:`condor_integer` is ``param_integer`` / ``string_is_long_param``
  (``src/condor_utils/condor_config.cpp``): a plain decimal literal, or else
  a ClassAd expression evaluated to a number (``VM_MEMORY = 512 * 2``);
  out-of-range values are clamped to a C int.
* :func:`condor_boolean` is ``string_is_boolean_param``: ``true``/``1`` or
  ``false``/``0`` (case-insensitive, trailing blanks allowed), or else a
  ClassAd expression evaluated to a boolean or a number. ``yes`` and ``t``
  are *not* booleans to HTCondor: they are attribute references, undefined.
* :func:`split_args_v1_raw_or_v2_quoted` is ``ArgList::AppendArgsV1RawOrV2Quoted``
  (``src/condor_utils/condor_arglist.cpp``), the syntax of
  ``LIBVIRT_XML_SCRIPT_ARGS``: a value whose first non-blank character is
  ``"`` is V2 (``""`` is a literal double quote inside, single quotes group
  words and ``''`` is a literal single quote); anything else is V1 raw,
  which only splits on blanks - no quoting at all.

The ClassAd library (classad2) is imported only for values that are not
plain literals, so reading ordinary configuration costs nothing.
"""

from __future__ import annotations

import re

from vmgahp.errors import VmgahpError

INT_MIN, INT_MAX = -0x80000000, 0x7FFFFFFF
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_DECIMAL = re.compile(f"[{_C_SPACE}]*([+-]?[0-9]+)[{_C_SPACE}]*\\Z")
_BOOL_LITERAL = re.compile(f"(true|1|false|0)[{_C_SPACE}]*\\Z", re.IGNORECASE)


def _evaluate(text: str) -> object:
    """The value of a ClassAd expression, or None if it does not parse or is
    UNDEFINED/ERROR."""
    import classad2  # deferred: only expressions need the ClassAd library

    # HTCondor parses the whole value (ParseExpression(value, full=true));
    # classad2's expression parser stops at trailing junk ("12 apples" is 12),
    # so the value is parsed inside a new-syntax ad, parenthesised, which must
    # consume all of it.
    if "\0" in text:
        return None
    try:
        ad = classad2.parseOne(f"[CondorValue = ({text}\n)]", classad2.ParserType.New)
        if "CondorValue" not in ad:
            return None
        value = ad.eval("CondorValue")
    except Exception:  # classad2 raises its own exception types for bad syntax
        return None
    return None if isinstance(value, classad2.Value) else value


def condor_integer(text: str | None) -> int | None:
    """An integer knob's value; None when unset or invalid (the caller's default)."""
    if text is None:
        return None
    match = _DECIMAL.match(text)
    if match:
        number = int(match.group(1))
    else:
        value = _evaluate(text)
        if isinstance(value, bool):  # EvaluateAttrNumber takes booleans as 0/1
            number = int(value)
        elif isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            number = int(value)
        else:
            return None
    return max(INT_MIN, min(INT_MAX, number))


def condor_boolean(text: str | None) -> bool | None:
    """A boolean knob's value; None when unset or invalid (the caller's default)."""
    if text is None:
        return None
    match = _BOOL_LITERAL.match(text)
    if match:
        return match.group(1).lower() in ("true", "1")
    value = _evaluate(text)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return None


class ArgsError(VmgahpError, ValueError):
    """The argument string does not parse; ``args`` holds the words before the error."""

    def __init__(self, message: str, args: list[str]) -> None:
        super().__init__(message)
        self.partial = args


def split_args_v1_raw_or_v2_quoted(text: str) -> list[str]:
    """Words of an HTCondor argument string (V1 raw or V2 quoted); raises ArgsError."""
    stripped = text.lstrip(_C_SPACE)
    if not stripped.startswith('"'):
        return _split_v1_raw(text)
    return _split_v2_raw(_v2_quoted_to_raw(stripped))


def _split_v1_raw(text: str) -> list[str]:
    # AppendArgsV1Raw_unix: blanks separate words, every other byte is data.
    return [word for word in re.split(r"[ \t\n\r]+", text) if word]


def _v2_quoted_to_raw(text: str) -> str:
    raw: list[str] = []
    i = 1  # past the opening quote
    while i < len(text):
        if text[i] == '"':
            if text[i + 1 : i + 2] == '"':  # a repeated quote is a literal one
                raw.append('"')
                i += 2
                continue
            rest = text[i + 1 :].strip(_C_SPACE)
            if rest:
                raise ArgsError(f"unexpected characters after the closing double quote: {rest[:40]!r}", [])
            return "".join(raw)
        raw.append(text[i])
        i += 1
    raise ArgsError("unterminated double quote", [])


def _split_v2_raw(text: str) -> list[str]:
    # split_args: single quotes group, '' inside them is a literal quote.
    args: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            in_word = True
            start = i
            i += 1
            while True:
                if i >= len(text):
                    raise ArgsError(f"unbalanced quote starting here: {text[start:start + 40]!r}", args)
                if text[i] == "'":
                    if text[i + 1 : i + 2] == "'":
                        word.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                word.append(text[i])
                i += 1
        elif ch in " \t\n\r":
            if in_word:
                args.append("".join(word))
                word, in_word = [], False
            i += 1
        else:
            word.append(ch)
            in_word = True
            i += 1
    if in_word:
        args.append("".join(word))
    return args
