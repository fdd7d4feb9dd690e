"""Reading a submit description: the line-level check, then HTCondor's macro expansion.

:func:`load` checks the file line by line first (HTCondor's own parser,
``htcondor2.Submit``, only says ``parse_up_to_q_line() failed``), so every
mistake is reported as ``JOB.sub:7: ...``; it then lets ``htcondor2.Submit``
expand the macros (``$(name)``, ``$ENV(X:default)``, ``if``/``else``, ...).
What the commands mean is :mod:`vmgahp.run.submit`'s business.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SubmitError(Exception):
    """A mistake in the submit description, reported as ``FILE:LINE: message``."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*\Z")
_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIRECTIVE = re.compile(r"(include|error|warning)\b[^=]*:", re.IGNORECASE)
_MACRO_OPEN = re.compile(r"\$\$?[A-Za-z_]*\(")
_UNEXPANDED = re.compile(r"(?<!\$)\$[A-Za-z_]+\([^)]*\)?")  # $ENV(..) etc. that htcondor2 left alone
_QUEUE = re.compile(r"queue(\s+(.*))?\Z", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Custom:
    """A ``+Name = expression`` (or ``MY.Name = expression``) line."""

    name: str
    value: str
    line: int


@dataclass
class SubmitDescription:
    """The commands of one submit file, up to its first ``queue``."""

    path: Path
    values: dict[str, str]  # lower-cased command -> value with macros expanded
    raw: dict[str, str]  # lower-cased command -> value as written
    lines: dict[str, int]  # lower-cased command -> line of its last assignment
    custom: dict[str, Custom]  # lower-cased +Name / MY.Name -> the attribute
    queue_line: int | None
    last_line: int
    warnings: list[str] = field(default_factory=list)
    spans: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    physical: list[str] = field(default_factory=list, repr=False)

    def get(self, key: str) -> str | None:
        """The expanded value, or None when unset or empty (as submit_param)."""
        value = self.values.get(key.lower())
        if value is None:
            return None
        value = value.strip()
        return value or None

    def lookup(self, *keys: str) -> tuple[str | None, str | None]:
        """``submit_param(name, alt_name)``: the first of ``keys`` the file sets (even
        to nothing), and its expanded value (None when empty: submit_utils.cpp:1104).
        A later name is read only when no earlier one is set at all (:1068)."""
        for key in keys:
            lowered = key.lower()
            if lowered in self.raw or lowered in self.values:
                return lowered, self.get(lowered)
        return None, None

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key.lower())

    @property
    def job_line(self) -> int:
        """Where the job is made: the queue statement (for 'missing ...' errors)."""
        return self.queue_line or self.last_line

    def error(self, key: str | None, message: str) -> SubmitError:
        line = self.line_of(key) if key else None
        return SubmitError(self.path, line or self.job_line, message)

    def warning(self, key: str, message: str) -> str:
        return f"{self.path}:{self.line_of(key) or self.job_line}: {message}"


def _check_macros(path: Path, line: int, value: str) -> None:
    for match in _MACRO_OPEN.finditer(value):
        depth = 0
        for char in value[match.end() - 1 :]:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
        if depth:
            raise SubmitError(path, line, f"unterminated macro {match.group(0)!r} in {value.strip()!r}")


def scan(text: str, path: Path) -> SubmitDescription:
    """Check the syntax line by line; record where each command is set."""
    physical = text.lstrip("\ufeff").split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the file's final newline
    spans: list[tuple[int, int, int]] = []  # (first line, end index, open ifs after it)
    lines: dict[str, int] = {}
    raw: dict[str, str] = {}
    custom: dict[str, Custom] = {}
    conditionals: list[tuple[int, bool]] = []  # (line of the if, else seen)
    queue_line: int | None = None
    queue_args = ""
    index = 0
    while index < len(physical):
        number = index + 1
        line = physical[index].rstrip("\r")
        index += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        # A trailing backslash continues the statement on the next line.
        while stripped.endswith("\\"):
            if index >= len(physical):
                raise SubmitError(path, number, "the line continues (trailing '\\') past the end of the file")
            stripped = stripped[:-1] + " " + physical[index].rstrip("\r").strip()
            index += 1
        word = stripped.split(None, 1)[0].lower()
        rest = stripped[len(word) :].strip()
        depth = len(conditionals) + (1 if word == "if" else -1 if word == "endif" else 0)
        spans.append((number, index, max(depth, 0)))
        if _QUEUE.match(stripped):
            if queue_line is None:
                queue_line, queue_args = number, rest
            continue
        if word in ("if", "elif"):
            if not rest:
                raise SubmitError(path, number, f"'{word}' needs a condition")
            if word == "elif" and (not conditionals or conditionals[-1][1]):
                raise SubmitError(path, number, "'elif' without a matching 'if'")
            if word == "if":
                conditionals.append((number, False))
            continue
        if word == "else" and not rest:
            if not conditionals or conditionals[-1][1]:
                raise SubmitError(path, number, "'else' without a matching 'if'")
            conditionals[-1] = (conditionals[-1][0], True)
            continue
        if word == "endif" and not rest:
            if not conditionals:
                raise SubmitError(path, number, "'endif' without a matching 'if'")
            conditionals.pop()
            continue
        if _DIRECTIVE.match(stripped):
            raise SubmitError(path, number, f"'{word} :' statements are not supported by vmgahp run")
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SubmitError(path, number, f"expected 'command = value', got {stripped!r}")
        key = key.strip()
        if key.endswith("@"):  # key @=TAG ... @TAG
            tag = value.strip()
            key = key[:-1].strip()
            body = []
            while True:
                if index >= len(physical):
                    raise SubmitError(path, number, f"'{key} @={tag}' has no closing '@{tag}' line")
                text_line = physical[index].rstrip("\r")
                index += 1
                if text_line.strip() == f"@{tag}":
                    break
                body.append(text_line)
            value = "\n".join(body)
            spans[-1] = (number, index, spans[-1][2])
        attr = None
        if key.startswith("+"):
            attr = key[1:]
        elif key.lower().startswith("my."):
            attr = key[3:]
        if attr is not None:
            if not _ATTR.match(attr):
                raise SubmitError(path, number, f"{attr!r} is not a valid job attribute name")
        elif not _KEY.match(key):
            raise SubmitError(path, number, f"{key!r} is not a valid submit command name (expected 'command = value')")
        _check_macros(path, number, value)
        if queue_line is not None:
            continue  # commands after the first queue make later jobs, not this one
        if attr is not None:
            custom[attr.lower()] = Custom(attr, "", number)
        else:
            lines[key.lower()] = number
            raw[key.lower()] = value.strip()
    if conditionals:
        raise SubmitError(path, conditionals[-1][0], "'if' without a matching 'endif'")
    description = SubmitDescription(
        path=path,
        values={},
        raw=raw,
        lines=lines,
        custom=custom,
        queue_line=queue_line,
        last_line=max(len(physical), 1),
        spans=spans,
        physical=physical,
    )
    if queue_line is None:
        description.warnings.append(f"{path}: no 'queue' statement; running one job anyway")
    elif queue_args and not re.fullmatch(r"1?", queue_args):
        if re.fullmatch(r"\d+", queue_args):
            description.warnings.append(
                f"{path}:{queue_line}: 'queue {queue_args}' makes {queue_args} jobs; "
                "vmgahp run runs the first (ProcId 0)"
            )
        else:
            raise SubmitError(
                path, queue_line, f"vmgahp run runs one job: use 'queue' or 'queue N', not 'queue {queue_args}'"
            )
    return description


def load(path: str | os.PathLike[str]) -> SubmitDescription:
    """Read, check and macro-expand a submit file. Raises SubmitError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SubmitError(path, line, "the file is not UTF-8 text") from exc
    except OSError as exc:
        raise SubmitError(path, None, f"cannot read the submit file: {exc.strerror or exc}") from exc
    description = scan(text, path)
    submit, message = _htcondor_parse(text)
    if submit is None:
        raise SubmitError(path, _failing_line(description), f"HTCondor cannot parse this: {message}")
    for key in submit.keys():
        try:
            value = submit.expand(key)
        except (KeyError, ValueError):  # "name =" with nothing after it
            value = ""
        if key.lower().startswith("my."):
            name = key[3:]
            line = description.custom.get(name.lower(), Custom(name, "", description.job_line)).line
            description.custom[name.lower()] = Custom(name, value.strip(), line)
        else:
            description.values[key.lower()] = value
            line = description.line_of(key) or description.job_line
        leftover = _UNEXPANDED.search(value)
        if leftover:
            raise SubmitError(path, line, f"cannot expand the macro in {value.strip()!r} near {leftover.group(0)!r}")
    # "+Name =" with nothing after it is assigned undefined (SetForcedAttributes, submit_utils.cpp:2704-2708)
    description.custom = {k: v if v.value else Custom(v.name, "undefined", v.line)
                          for k, v in description.custom.items()}
    return description


def _htcondor_parse(text: str) -> tuple[Any, str]:
    """``htcondor2.Submit(text)``, with HTCondor's own complaint (printed on fd 2) captured."""
    import htcondor2  # deferred: the daemon never needs it

    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            submit = htcondor2.Submit(text)
            failure = ""
        except Exception as exc:  # noqa: BLE001 - htcondor2 raises ValueError without a line
            submit, failure = None, str(exc)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        said = capture.read().decode(errors="replace")
    if submit is None:
        match = re.search(r"error: '?(.*?)'? line: ", said)
        failure = match.group(1) if match else (said.strip().splitlines() or [failure])[-1]
    return submit, failure


def _failing_line(description: SubmitDescription) -> int | None:
    """The first statement after which HTCondor's parser fails (prefixes parse on their own)."""
    for line, end, depth in description.spans:
        prefix = "\n".join(description.physical[:end]) + "\n" + "endif\n" * depth
        if _htcondor_parse(prefix)[0] is None:
            return line
    return None

