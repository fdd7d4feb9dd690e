"""The job ClassAd as the starter sends it, parsed with HTCondor's library.

Each ``Name = expression`` line of the CLASSAD block is parsed on its own with
``classad2`` (old ClassAd syntax); a line that does not parse is dropped and
logged, as the C++ gahp does. Lookups follow HTCondor semantics: names are
case-insensitive, expressions are evaluated in the ad, integers accept reals
(truncated) and booleans accept numbers.
"""

from __future__ import annotations

import re
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


class JobAd:
    """A read-only view of the job ad with typed, HTCondor-style getters."""

    def __init__(self, lines: tuple[str, ...] | list[str]) -> None:
        import classad2  # deferred: only START needs the ClassAd library

        self._classad2 = classad2
        self.ad = classad2.ClassAd()
        self.dropped: list[str] = []
        for line in lines:
            if not self._insert(line):
                self.dropped.append(line)

    def _insert(self, line: str) -> bool:
        name, sep, value = line.lstrip().partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name) or not value.strip():
            return False
        try:
            parsed = self._classad2.parseOne(f"{name} = {value.strip()}", self._classad2.ParserType.Old)
        except Exception:  # classad2 raises its own ClassAdException types
            return False
        if name not in parsed:
            return False
        self.ad[name] = parsed.lookup(name)
        return True

    def __contains__(self, name: str) -> bool:
        return name in self.ad

    def _value(self, name: str) -> Any:
        if name not in self.ad:
            return None
        try:
            value = self.ad.eval(name)
        except Exception:
            return None
        if isinstance(value, self._classad2.Value):  # UNDEFINED or ERROR
            return None
        return value

    def get_str(self, name: str) -> str | None:
        value = self._value(name)
        return value if isinstance(value, str) else None

    def get_int(self, name: str) -> int | None:
        value = self._value(name)
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None

    def get_bool(self, name: str) -> bool | None:
        value = self._value(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        return None

    def set_str(self, name: str, value: str) -> None:
        self.ad[name] = value

    def print_sorted(self, exclude_private: bool = True) -> str:
        """``Name = value`` lines sorted by name, as sPrintAd feeds the XML script."""
        lines = []
        for name in sorted(self.ad.keys(), key=str.lower):
            if exclude_private and _is_private(name):
                continue
            lines.append(f"{name} = {self.ad.lookup(name)}")
        return "\n".join(lines) + "\n"


_PRIVATE = {"capability", "claimid", "claimidlist", "childclaimids", "publicclaimid"}


def _is_private(name: str) -> bool:
    lowered = name.lower()
    return lowered in _PRIVATE or lowered.startswith("_condor_priv")
